"""C2SP signed notes and checkpoints against the spec's example vector."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelplane.security.audit.note import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    open_note,
)
from modelplane.security.errors import InvalidProof, SecurityConfigError

VECTOR = json.loads(
    (
        Path(__file__).resolve().parents[2]
        / ".."
        / "shared"
        / "data"
        / "vectors"
        / "c2sp_signed_note_vector.json"
    ).read_text()
)


def test_spec_vector_verifies() -> None:
    verifier = NoteVerifier.from_vkey(VECTOR["vkey"])
    assert verifier.vkey == VECTOR["vkey"]
    opened = open_note(VECTOR["note"], [verifier])
    assert opened.text == "This is an example message.\n"
    assert opened.verified_by == ("example.com/foo",)


def test_tampered_spec_vector_fails() -> None:
    verifier = NoteVerifier.from_vkey(VECTOR["vkey"])
    with pytest.raises(InvalidProof, match="does not verify"):
        open_note(VECTOR["note"].replace("example message", "exemplary message"), [verifier])


def test_unknown_signers_are_ignored_but_one_trusted_signature_is_required() -> None:
    other = NoteSigner.generate("other.example/key").verifier
    with pytest.raises(InvalidProof, match="no signature from a trusted key"):
        open_note(VECTOR["note"], [other])


def test_bad_vkeys_are_rejected_with_a_reason() -> None:
    name, _kid, key = VECTOR["vkey"].split("+")
    with pytest.raises(SecurityConfigError, match="key ID"):
        NoteVerifier.from_vkey(f"{name}+00000000+{key}")
    with pytest.raises(SecurityConfigError, match="malformed"):
        NoteVerifier.from_vkey("no-plus-signs")


def test_checkpoint_round_trip_and_origin_check() -> None:
    signer = NoteSigner.generate("modelplane.test/audit")
    cp = Checkpoint("modelplane.test/audit", 42, bytes(range(32)))
    note = signer.sign(cp.text())
    assert note.startswith("modelplane.test/audit\n42\n")
    assert open_checkpoint(note, [signer.verifier], "modelplane.test/audit") == cp
    with pytest.raises(InvalidProof, match="expected"):
        open_checkpoint(note, [signer.verifier], "someone.else/log")
    forged = note.replace("\n42\n", "\n43\n")
    with pytest.raises(InvalidProof):
        open_checkpoint(forged, [signer.verifier])


def test_checkpoint_body_rules() -> None:
    with pytest.raises(InvalidProof, match="leading zeros"):
        Checkpoint.parse("o\n042\nAAAA\n")
    with pytest.raises(InvalidProof, match="three non-empty lines"):
        Checkpoint.parse("o\n1\n")


def test_signer_key_round_trip() -> None:
    signer = NoteSigner.generate("modelplane.test/audit")
    again = NoteSigner.from_skey(signer.skey)
    assert again.verifier == signer.verifier
    note = again.sign("hello\n")
    assert open_note(note, [NoteVerifier.from_vkey(signer.verifier.vkey)]).text == "hello\n"
    with pytest.raises(SecurityConfigError, match="malformed"):
        NoteSigner.from_skey("PRIVATE+KEY+x")
