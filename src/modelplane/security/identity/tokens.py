"""Short-lived access tokens signed with Ed25519, and opaque secrets stored only as hashes.

An access token is ``mp1.<base64url(json claims)>.<base64url(signature)>``; it is verified offline
with the public key, so every API replica can check it without a database round trip except the
revocation lookup.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from modelplane.security.errors import AuthenticationFailed
from modelplane.security.principal import Principal

PREFIX = "mp1"
DEFAULT_ACCESS_TTL_S = 15 * 60.0
DEFAULT_REFRESH_TTL_S = 7 * 86_400.0
INVALID = "invalid or expired credentials"


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def secret_hash(secret: str) -> str:
    """SHA-256 is enough for 256-bit random secrets (no dictionary to attack); never store the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class TokenKey:
    """The Ed25519 key that signs access tokens (raw 32-byte private key)."""

    private_key: bytes

    @classmethod
    def generate(cls) -> TokenKey:
        key = Ed25519PrivateKey.generate()
        return cls(
            key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
        )

    @property
    def public_key(self) -> bytes:
        return (
            Ed25519PrivateKey.from_private_bytes(self.private_key)
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )


def issue_access_token(
    key: TokenKey, principal: Principal, now: float, ttl_s: float = DEFAULT_ACCESS_TTL_S
) -> tuple[str, str, float]:
    """Return (token, jti, expires_at)."""
    jti = secrets.token_hex(16)
    exp = now + ttl_s
    claims: dict[str, Any] = {
        "sub": principal.id,
        "kind": principal.kind,
        "team": principal.team,
        "role": principal.role,
        "scopes": list(principal.scopes),
        "mfa_at": principal.mfa_at,
        "dev": principal.device,
        "iat": now,
        "exp": exp,
        "jti": jti,
    }
    payload = _b64e(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    signing_input = f"{PREFIX}.{payload}".encode()
    sig = Ed25519PrivateKey.from_private_bytes(key.private_key).sign(signing_input)
    return f"{PREFIX}.{payload}.{_b64e(sig)}", jti, exp


def verify_access_token(public_key: bytes, token: str, now: float) -> tuple[Principal, float]:
    """Check signature and expiry; return the principal and the expiry. Revocation is the caller's."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise AuthenticationFailed(INVALID, hint="send 'Authorization: Bearer <access token>'")
    try:
        sig = _b64d(parts[2])
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig, f"{PREFIX}.{parts[1]}".encode())
        claims = json.loads(_b64d(parts[1]))
    except (InvalidSignature, ValueError, binascii.Error) as exc:
        raise AuthenticationFailed(INVALID, hint="log in again to get a fresh token") from exc
    if not isinstance(claims, dict) or float(claims.get("exp", 0)) <= now:
        raise AuthenticationFailed(INVALID, hint="the token expired; use your refresh token or log in again")
    if float(claims.get("iat", now + 1)) > now + 60:
        raise AuthenticationFailed(INVALID, hint="token issued in the future; check the server clock")
    principal = Principal(
        id=str(claims["sub"]),
        kind=str(claims["kind"]),
        team=str(claims["team"]),
        role=str(claims["role"]),
        scopes=tuple(claims.get("scopes", ())),
        mfa_at=None if claims.get("mfa_at") is None else float(claims["mfa_at"]),
        device=claims.get("dev"),
        token_id=str(claims["jti"]),
    )
    return principal, float(claims["exp"])
