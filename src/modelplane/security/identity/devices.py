"""Device identity: a key pair registered once; the device proves possession by signing a challenge.

The fingerprint is SHA-256 of the raw Ed25519 public key, so it names the key, not a user agent.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from modelplane.security.errors import SecurityConfigError

CHALLENGE_CONTEXT = b"modelplane-device-challenge-v1\n"


def fingerprint(public_key: bytes) -> str:
    if len(public_key) != 32:
        raise SecurityConfigError(
            f"device public key must be 32 raw Ed25519 bytes, got {len(public_key)}",
            hint="send the raw public key, base64-encoded",
            field="public_key",
        )
    return "sha256:" + hashlib.sha256(public_key).hexdigest()


def challenge_message(nonce: str, fp: str) -> bytes:
    """What the device signs: domain-separated so the key signs nothing else by accident."""
    return CHALLENGE_CONTEXT + fp.encode() + b"\n" + nonce.encode()


def verify_device_signature(public_key: bytes, nonce: str, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, challenge_message(nonce, fingerprint(public_key))
        )
    except (InvalidSignature, ValueError):
        return False
    return True
