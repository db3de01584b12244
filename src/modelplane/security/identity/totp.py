"""TOTP second factor (RFC 6238) via pyotp, with a replay guard on the accepted time step."""

from __future__ import annotations

import hmac

import pyotp

from modelplane.security.errors import SecurityConfigError

DIGESTS = {"SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}


def new_secret() -> str:
    """A fresh base32 secret (160 bits) to show once as a QR code."""
    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, account: str, issuer: str = "modelplane") -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def _totp(secret: str, digits: int, digest: str, interval: int) -> pyotp.TOTP:
    if digest.upper() not in DIGESTS:
        raise SecurityConfigError(f"unknown TOTP digest {digest!r}", hint=f"use one of {sorted(DIGESTS)}")
    return pyotp.TOTP(secret, digits=digits, digest=DIGESTS[digest.upper()], interval=interval)


def code_at(secret: str, now: float, *, digits: int = 6, digest: str = "SHA1", interval: int = 30) -> str:
    return _totp(secret, digits, digest, interval).at(int(now))


def verify_code(
    secret: str,
    code: str,
    now: float,
    *,
    last_counter: int | None = None,
    window: int = 1,
    digits: int = 6,
    digest: str = "SHA1",
    interval: int = 30,
) -> int | None:
    """Return the time step the code matched (store it as ``last_counter``), or None.

    A step at or before ``last_counter`` is refused, so an observed code cannot be replayed.
    """
    totp = _totp(secret, digits, digest, interval)
    counter = int(now) // interval
    code = code.strip()
    if not (code.isascii() and code.isdigit() and len(code) == digits):
        return None  # not a code at all (compare_digest refuses non-ASCII text)
    for step in range(counter - window, counter + window + 1):
        if step < 0 or (last_counter is not None and step <= last_counter):
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None
