"""Password hashing with argon2id (memory-hard), via argon2-cffi."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from modelplane.security.errors import SecurityConfigError

MIN_PASSWORD_LENGTH = 12


def make_hasher(*, fast: bool = False) -> PasswordHasher:
    """The RFC 9106 low-memory profile in production; a cheap one for tests only."""
    if fast:
        return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    return PasswordHasher()


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise SecurityConfigError(
            f"password is too short ({len(password)} characters)",
            hint=f"use at least {MIN_PASSWORD_LENGTH} characters; a passphrase is fine",
            field="password",
        )


def hash_password(hasher: PasswordHasher, password: str) -> str:
    check_password_policy(password)
    return hasher.hash(password)


def verify_password(hasher: PasswordHasher, stored: str, password: str) -> bool:
    try:
        return hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
