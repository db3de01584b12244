from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.privacy.errors import MalformedMessage
from modelplane.privacy.psi import (
    BlindRequest,
    RsaSigner,
    full_domain_hash,
    intersect_as_requester,
    intersect_as_signer,
)
from modelplane.privacy.tls import Listener, TlsFiles, connect

SIGNER = RsaSigner.generate(1024)
ids = st.sets(st.text(alphabet="abcdef0123", min_size=1, max_size=6), max_size=15)


@settings(max_examples=25, deadline=None)
@given(ids, ids)
def test_blind_signature_tags_match_exactly_on_the_intersection(host: set[str], guest: set[str]) -> None:
    request = BlindRequest.create(sorted(host), SIGNER.n, SIGNER.e)
    mine = request.unblind_tags(SIGNER.sign(request.blinded))
    theirs = SIGNER.own_tags(sorted(guest))
    assert {mine[t] for t in mine.keys() & theirs.keys()} == host & guest


def test_signer_sees_only_blinded_values() -> None:
    host_ids = ["alice", "bob", "carol"]
    request = BlindRequest.create(host_ids, SIGNER.n, SIGNER.e)
    hashes = {full_domain_hash(i, SIGNER.n) for i in host_ids}
    assert not hashes & set(request.blinded)
    again = BlindRequest.create(host_ids, SIGNER.n, SIGNER.e)
    assert not set(again.blinded) & set(request.blinded)  # fresh blinding every run


def _run_psi(pki: dict[str, TlsFiles], host_ids: list[str], guest_ids: list[str]) -> tuple[list[str], list[str], list[bytes]]:
    listener = Listener("127.0.0.1:0", pki["guest"])
    sent_by_host: list[bytes] = []
    out: dict[str, list[str]] = {}

    def guest() -> None:
        out["guest"] = intersect_as_signer(listener.accept(), guest_ids, bits=1024)

    t = threading.Thread(target=guest)
    t.start()
    channel = connect(listener.address, pki["host"], "guest", on_send=lambda _peer, data: sent_by_host.append(data))
    out["host"] = intersect_as_requester(channel, host_ids)
    t.join()
    listener.close()
    return out["host"], out["guest"], sent_by_host


def test_psi_over_tls_reveals_only_the_intersection(pki: dict[str, TlsFiles]) -> None:
    host_ids = ["u1", "u2", "u3", "secret-host-only"]
    guest_ids = ["u2", "u3", "u4", "secret-guest-only"]
    host_view, guest_view, wire = _run_psi(pki, host_ids, guest_ids)
    assert host_view == guest_view == ["u2", "u3"]
    blob = b"".join(wire)
    assert b"secret-host-only" not in blob and b"u1" not in blob
    # only the two matched tags go back to the guest
    import json

    final = json.loads(wire[-1])
    assert final["kind"] == "psi_intersection_tags" and len(final["tags"]) == 2


def test_forged_intersection_tags_are_rejected(pki: dict[str, TlsFiles]) -> None:
    listener = Listener("127.0.0.1:0", pki["guest"])
    errors: list[BaseException] = []

    def guest() -> None:
        try:
            intersect_as_signer(listener.accept(), ["a", "b"], bits=1024)
        except MalformedMessage as exc:
            errors.append(exc)

    t = threading.Thread(target=guest)
    t.start()
    ch = connect(listener.address, pki["host"], "guest")
    ch.recv()
    ch.send({"kind": "psi_blinded_ids", "values": [5]})
    ch.recv()
    ch.send({"kind": "psi_intersection_tags", "tags": ["deadbeef"]})
    t.join(10)
    listener.close()
    assert errors and errors[0].field == "host"


def test_weak_rsa_key_is_refused(pki: dict[str, TlsFiles]) -> None:
    listener = Listener("127.0.0.1:0", pki["guest"])

    def fake_guest() -> None:
        ch = listener.accept()
        ch.send({"kind": "psi_rsa_public_key", "n": 3233, "e": 17})

    t = threading.Thread(target=fake_guest)
    t.start()
    ch = connect(listener.address, pki["host"], "guest")
    with pytest.raises(MalformedMessage, match="weak or malformed RSA key"):
        intersect_as_requester(ch, ["x"])
    t.join()
    listener.close()
