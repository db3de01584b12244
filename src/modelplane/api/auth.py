"""Bearer tokens: every request but the health check needs one.

At first start an admin token is created, shown once, and stored only as its SHA-256 hash. The
security issue builds users, MFA and policies on this seam: ``authenticate`` returns a principal.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from fastapi import Request

from modelplane.core.errors import Unauthorized
from modelplane.store import Store

TOKEN_PREFIX = "mp_"


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def ensure_admin_token(store: Store) -> str | None:
    """Create the first admin token if there is none; returns it (the only time it is ever seen)."""
    if store.count_tokens():
        return None
    token = new_token()
    store.add_token("admin", hash_token(token), "admin")
    return token


def authenticate(store: Store, request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("this request needs a bearer token",
                           hint="send 'Authorization: Bearer <token>'; the admin token was printed at first start "
                                "(the CLI reads MODELPLANE_TOKEN or the credentials file)")
    found = store.find_token(hash_token(token.strip()))
    if found is None:
        raise Unauthorized("the bearer token is not valid or was revoked",
                           hint="check MODELPLANE_TOKEN; an admin can issue a new token")
    return Principal(*found)
