"""The foundation's bearer-token seam, now backed by the security library (one credential system).

The first admin is the service account ``admin`` (team ``platform``) with an API key scoped
``role:admin``: created at first start, shown once, stored only as its SHA-256 hash in
``security_api_keys``. The old ``api_tokens`` table is kept by the schema but no longer read.
Users log in for short-lived Ed25519 access tokens (see ``api/routes/auth.py``).
"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import Request

from modelplane.api.security import bearer, bootstrap_admin, security_for
from modelplane.security.errors import AuthenticationFailed
from modelplane.security.principal import Principal
from modelplane.store import Store

__all__ = ["Principal", "authenticate", "ensure_admin_token"]


def ensure_admin_token(store: Store, home: Path | None = None, *, fast_hashing: bool = False) -> str | None:
    """Create the first admin's API key if there is none; returns it (the only time it is ever seen)."""
    return bootstrap_admin(security_for(store, home, fast_hashing=fast_hashing), time.time())


def authenticate(store: Store, request: Request) -> Principal:
    """Who sent this request (authentication only; the API's guard also authorizes and audits)."""
    credential = bearer(request)
    if not credential:
        raise AuthenticationFailed("invalid or expired credentials", hint="send 'Authorization: Bearer <token>'")
    return security_for(store).authenticator.authenticate(credential, time.time())
