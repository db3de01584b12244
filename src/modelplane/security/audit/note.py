"""C2SP signed notes (Ed25519) and tlog checkpoints.

A checkpoint commits the log to (origin, size, root); anyone holding the verifier key (``vkey``)
can check it offline, and witnesses can cosign the same text later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from modelplane.security.errors import InvalidProof, SecurityConfigError

_ED25519 = b"\x01"
_SIG_PREFIX = "\u2014 "


def _check_name(name: str) -> None:
    if not name or "+" in name or any(ch.isspace() for ch in name):
        raise SecurityConfigError(
            f"invalid signed-note key name {name!r}",
            hint="use a non-empty name without spaces or '+', e.g. 'modelplane.example/audit'",
        )


def key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x01 || pubkey)[:4], the C2SP recommended Ed25519 key ID."""
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public_key).digest()[:4]


@dataclass(frozen=True)
class NoteVerifier:
    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse ``name+hexid+base64(0x01||pubkey)``."""
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise SecurityConfigError(
                f"malformed verifier key {vkey!r}", hint="expected name+keyid+base64key"
            )
        name, hexid, b64 = parts
        _check_name(name)
        try:
            kid = bytes.fromhex(hexid)
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise SecurityConfigError(f"malformed verifier key {vkey!r}: {exc}") from exc
        if len(kid) != 4 or len(raw) != 33 or raw[:1] != _ED25519:
            raise SecurityConfigError(
                f"verifier key {vkey!r} is not an Ed25519 key", hint="only signature type 0x01 is supported"
            )
        if key_id(name, raw[1:]) != kid:
            raise SecurityConfigError(f"verifier key {vkey!r} has a key ID that does not match its key")
        return cls(name, kid, raw[1:])

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(_ED25519 + self.public_key).decode()}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class NoteSigner:
    name: str
    private_key: bytes = field(repr=False)

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        _check_name(name)
        return cls(name, raw)

    @property
    def skey(self) -> str:
        """``PRIVATE+KEY+name+keyid+base64(0x01||seed)`` (the Go note package's format): keep secret."""
        raw = base64.b64encode(_ED25519 + self.private_key).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id.hex()}+{raw}"

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise SecurityConfigError(
                "malformed signer key", hint="expected PRIVATE+KEY+name+keyid+base64key"
            )
        try:
            raw = base64.b64decode(parts[4], validate=True)
        except (ValueError, binascii.Error) as exc:
            raise SecurityConfigError("malformed signer key: key is not base64") from exc
        if len(raw) != 33 or raw[:1] != _ED25519:
            raise SecurityConfigError("signer key is not an Ed25519 key")
        _check_name(parts[2])
        signer = cls(parts[2], raw[1:])
        if signer.verifier.key_id.hex() != parts[3]:
            raise SecurityConfigError("signer key ID does not match its key")
        return signer

    def _key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.private_key)

    @property
    def verifier(self) -> NoteVerifier:
        pub = (
            self._key().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        return NoteVerifier(self.name, key_id(self.name, pub), pub)

    def sign(self, text: str) -> str:
        """Return the signed note: text, a blank line, one signature line."""
        _check_text(text)
        sig = self._key().sign(text.encode())
        line = base64.b64encode(self.verifier.key_id + sig).decode()
        return f"{text}\n{_SIG_PREFIX}{self.name} {line}\n"


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise InvalidProof("note text must end with a newline")
    if any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise InvalidProof("note text must not contain control characters other than newline")


@dataclass(frozen=True)
class OpenedNote:
    text: str
    verified_by: tuple[str, ...]


def open_note(note: str, verifiers: list[NoteVerifier]) -> OpenedNote:
    """Verify a signed note against trusted keys; unknown signers are ignored, as the spec says."""
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise InvalidProof("malformed signed note: no blank line before the signatures")
    text = note[: cut + 1]
    _check_text(text)
    known = {(v.name, v.key_id): v for v in verifiers}
    good: list[str] = []
    for line in note[cut + 2 :].splitlines():
        if not line.startswith(_SIG_PREFIX):
            raise InvalidProof(f"malformed signature line {line!r}")
        name, _, b64 = line[len(_SIG_PREFIX) :].rpartition(" ")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise InvalidProof(f"signature of {name!r} is not base64") from exc
        if len(raw) < 5:
            raise InvalidProof(f"signature of {name!r} is too short")
        verifier = known.get((name, raw[:4]))
        if verifier is None:
            continue
        if not verifier.verify(text.encode(), raw[4:]):
            raise InvalidProof(f"signature by {name!r} does not verify: the note was altered or forged")
        good.append(name)
    if not good:
        raise InvalidProof("the note carries no signature from a trusted key")
    return OpenedNote(text, tuple(good))


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode(), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if lines[-1] != "" or len(lines) < 4 or any(not line for line in lines[:-1]):
            raise InvalidProof("a checkpoint needs at least three non-empty lines ending in a newline")
        origin, size_s, root_s, *ext = lines[:-1]
        if not size_s.isdigit() or (size_s != "0" and size_s.startswith("0")):
            raise InvalidProof(f"checkpoint tree size {size_s!r} is not a decimal without leading zeros")
        try:
            root = base64.b64decode(root_s, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise InvalidProof("checkpoint root hash is not base64") from exc
        return cls(origin, int(size_s), root, tuple(ext))


def sign_checkpoint(signer: NoteSigner, checkpoint: Checkpoint) -> str:
    return signer.sign(checkpoint.text())


def open_checkpoint(note: str, verifiers: list[NoteVerifier], origin: str | None = None) -> Checkpoint:
    """Verify the signature and parse the body; optionally insist on the log's origin."""
    checkpoint = Checkpoint.parse(open_note(note, verifiers).text)
    if origin is not None and checkpoint.origin != origin:
        raise InvalidProof(f"checkpoint is for log {checkpoint.origin!r}, expected {origin!r}")
    return checkpoint
