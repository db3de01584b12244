"""Login, token refresh and logout, MFA enrolment and step-up, registered devices.

``public_router`` holds the credential exchanges (the identity service checks the credential
itself; each is audited); ``router`` holds a signed-in user's self-service calls, which the guard
authorizes like any other route.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from modelplane.api.security import ApiSecurity, audit_public, bearer, request_context, source_ip
from modelplane.core.errors import InvalidSpec
from modelplane.security.errors import AuthenticationFailed
from modelplane.security.identity.sql import DeviceProof
from modelplane.security.principal import TokenPair
from modelplane.security.risk import RequestEvent

TOTP_CODE = r"^[0-9]{6,8}$"
public_router = APIRouter(prefix="/auth", tags=["auth"])
router = APIRouter(prefix="/auth", tags=["auth"])


def _security(request: Request) -> ApiSecurity:
    sec: ApiSecurity = request.app.state.security
    return sec


Security = Annotated[ApiSecurity, Depends(_security)]


FINGERPRINT = r"^sha256:[0-9a-f]{64}$"  # security/identity/devices.fingerprint


class DeviceProofIn(BaseModel):
    fingerprint: str = Field(max_length=80, pattern=FINGERPRINT)
    nonce: str = Field(max_length=200)
    signature: str = Field(max_length=200, description="base64 Ed25519 signature over the challenge")


class LoginIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    password: str = Field(max_length=1024)
    totp_code: str | None = Field(default=None, pattern=TOTP_CODE)
    device: DeviceProofIn | None = None


class RefreshIn(BaseModel):
    refresh_token: str = Field(max_length=200)


class CodeIn(BaseModel):
    code: str = Field(pattern=TOTP_CODE, description="the current code from the authenticator app")


class DeviceIn(BaseModel):
    public_key: str = Field(max_length=100, description="base64 of the raw 32-byte Ed25519 public key")


class FingerprintIn(BaseModel):
    fingerprint: str = Field(max_length=80, pattern=FINGERPRINT)


def _b64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSpec(f"{field} is not base64", hint="send standard base64 with padding", field=field) from None


def tokens_view(pair: TokenPair) -> dict[str, Any]:
    p = pair.principal
    return {"access_token": pair.access_token, "refresh_token": pair.refresh_token, "expires_at": pair.expires_at,
            "principal": {"name": p.id, "kind": p.kind, "team": p.team, "role": p.role, "mfa": p.mfa_at is not None,
                          "device": p.device}}


def _need_bearer(request: Request) -> str:
    token = bearer(request)
    if not token:
        raise AuthenticationFailed("invalid or expired credentials", hint="send 'Authorization: Bearer <access token>'")
    return token


@public_router.post("/login")
def login(body: LoginIn, request: Request, sec: Security) -> dict[str, Any]:
    """Password (+ TOTP code when enrolled, + optional device proof) -> access and refresh tokens."""
    _, rs = request_context(request)
    device = None
    if body.device is not None:
        device = DeviceProof(body.device.fingerprint, body.device.nonce, _b64(body.device.signature, "device.signature"))
    pair = sec.gate(rs.sink).login(sec.identities, body.name, body.password, now=time.time(),
                                   request_id=rs.request_id, source_ip=source_ip(request),
                                   totp_code=body.totp_code, device=device)
    return tokens_view(pair)


@public_router.post("/refresh")
def refresh(body: RefreshIn, request: Request, sec: Security) -> dict[str, Any]:
    """Rotate a refresh token; reusing a spent one revokes every session of that login."""
    try:
        pair = sec.identities.refresh(body.refresh_token, time.time())
    except AuthenticationFailed:
        audit_public(request, "unknown", "denied", "Identity/refresh", {"stage": "refresh"})
        raise
    audit_public(request, pair.principal.id, "succeeded", f"Identity/{pair.principal.id}", {"stage": "refresh"})
    return tokens_view(pair)


@public_router.post("/logout")
def logout(body: RefreshIn, request: Request, sec: Security) -> dict[str, str]:
    """Revoke this access token and every refresh token of its login."""
    access = _need_bearer(request)
    now = time.time()
    principal = sec.identities.authenticate(access, now)
    sec.identities.logout(access, body.refresh_token, now)
    audit_public(request, principal.id, "succeeded", f"Identity/{principal.id}", {"stage": "logout"})
    return {"status": "logged out"}


@public_router.post("/step-up")
def step_up(body: CodeIn, request: Request, sec: Security) -> dict[str, Any]:
    """A fresh TOTP code -> new tokens with a fresh MFA time (what a 403 'MFA required' asks for)."""
    _, rs = request_context(request)
    now, ip = time.time(), source_ip(request)
    pair = sec.gate(rs.sink).step_up(sec.identities, _need_bearer(request), body.code, now=now,
                                     request_id=rs.request_id, source_ip=ip)
    # The second factor vouched for this context: let the baseline learn it (risk README contract).
    sec.risk.observe(RequestEvent(pair.principal.id, now, ip, pair.principal.device))
    return tokens_view(pair)


@public_router.post("/devices/challenge")
def device_challenge(body: FingerprintIn, request: Request, sec: Security) -> dict[str, Any]:
    """A one-time nonce for a registered device to sign (before login, so no token is needed)."""
    nonce = sec.identities.device_challenge(body.fingerprint, time.time())
    return {"nonce": nonce, "fingerprint": body.fingerprint}


@router.get("/whoami")
def whoami(request: Request) -> dict[str, Any]:
    _, rs = request_context(request)
    assert rs.admitted is not None
    p = rs.admitted.principal
    return {"name": p.id, "kind": p.kind, "team": p.team, "role": p.role, "scopes": list(p.scopes),
            "mfa": p.mfa_at is not None, "device": p.device, "risk": rs.admitted.risk.score}


@router.post("/mfa/enroll")
def mfa_enroll(request: Request, sec: Security) -> dict[str, str]:
    """Start TOTP enrolment: the secret and an otpauth:// URI for an authenticator app."""
    _, rs = request_context(request)
    assert rs.admitted is not None
    enrolment = sec.identities.enroll_totp(rs.admitted.principal.id)
    return {"secret": enrolment.secret, "uri": enrolment.uri}


@router.post("/mfa/confirm")
def mfa_confirm(body: CodeIn, request: Request, sec: Security) -> dict[str, str]:
    """Finish enrolment with a current code; from now on login needs a TOTP code."""
    _, rs = request_context(request)
    assert rs.admitted is not None
    sec.identities.confirm_totp(rs.admitted.principal.id, body.code, time.time())
    return {"status": "enrolled"}


@router.post("/devices", status_code=201)
def register_device(body: DeviceIn, request: Request, sec: Security) -> dict[str, str]:
    """Register a device key pair; its fingerprint names the key, not a user agent."""
    _, rs = request_context(request)
    assert rs.admitted is not None
    fp = sec.identities.register_device(rs.admitted.principal.id, _b64(body.public_key, "public_key"), time.time())
    return {"fingerprint": fp}


@router.post("/devices/verify")
def verify_device(body: DeviceProofIn, request: Request, sec: Security) -> dict[str, bool]:
    """Check a device's signature over a challenge (the challenge is spent either way)."""
    ok = sec.identities.verify_device(body.fingerprint, body.nonce, _b64(body.signature, "signature"), time.time())
    return {"valid": ok}
