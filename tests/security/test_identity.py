"""Identities and credentials on SQLite and PostgreSQL: passwords, TOTP, tokens, API keys, devices."""

from __future__ import annotations

import json
from pathlib import Path

import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from modelplane.core.errors import Conflict, NotFound
from modelplane.security.errors import AuthenticationFailed, SecurityConfigError
from modelplane.security.identity import totp
from modelplane.security.identity.devices import challenge_message, fingerprint
from modelplane.security.identity.sql import DeviceProof, IdentityService
from modelplane.security.identity.tokens import TokenKey, issue_access_token, verify_access_token

VECTORS = json.loads(
    (
        Path(__file__).resolve().parents[2]
        / ".."
        / "shared"
        / "data"
        / "vectors"
        / "rfc6238_totp_vectors.json"
    ).read_text()
)
NOW = 1_780_000_000.0
PW = "correct horse battery staple"


# ------------------------------------------------------------------ pure parts
@pytest.mark.parametrize("row", VECTORS["totp"], ids=lambda r: str(r["time"]))
@pytest.mark.parametrize("digest", ["SHA1", "SHA256", "SHA512"])
def test_rfc6238_vectors(row: dict[str, str | int], digest: str) -> None:
    import base64

    secret = base64.b32encode(VECTORS["totp_seeds_ascii"][digest].encode()).decode()
    want = str(row[digest])
    assert totp.code_at(secret, float(row["time"]), digits=8, digest=digest) == want
    assert totp.verify_code(secret, want, float(row["time"]), digits=8, digest=digest, window=0) is not None


def test_rfc4226_hotp_vectors() -> None:
    import base64

    secret = base64.b32encode(VECTORS["hotp_secret_ascii"].encode()).decode()
    assert [pyotp.HOTP(secret).at(i) for i in range(10)] == VECTORS["hotp_counter_0_to_9"]


def test_totp_replay_and_window() -> None:
    secret = totp.new_secret()
    code = totp.code_at(secret, NOW)
    step = totp.verify_code(secret, code, NOW)
    assert step == int(NOW) // 30
    assert totp.verify_code(secret, code, NOW, last_counter=step) is None  # replay refused
    assert totp.verify_code(secret, code, NOW + 30) is not None  # one step of clock skew tolerated
    assert totp.verify_code(secret, code, NOW + 120) is None


def test_token_signature_expiry_and_wrong_key() -> None:
    from modelplane.security.principal import Principal

    key, other = TokenKey.generate(), TokenKey.generate()
    token, jti, _exp = issue_access_token(key, Principal("ann", "user", "a", "member"), NOW, ttl_s=60)
    principal, _ = verify_access_token(key.public_key, token, NOW + 59)
    assert (principal.id, principal.team, principal.token_id) == ("ann", "a", jti)
    with pytest.raises(AuthenticationFailed, match="invalid or expired"):
        verify_access_token(key.public_key, token, NOW + 60)
    with pytest.raises(AuthenticationFailed):
        verify_access_token(other.public_key, token, NOW)
    head, payload, sig = token.split(".")
    forged = payload.replace(payload[5], "A" if payload[5] != "A" else "B")
    with pytest.raises(AuthenticationFailed):
        verify_access_token(key.public_key, f"{head}.{forged}.{sig}", NOW)


# ------------------------------------------------------------------ service on SQL
@pytest.fixture
def ids(engine: Engine) -> IdentityService:
    svc = IdentityService(engine, TokenKey.generate(), fast_hashing=True, access_ttl_s=300)
    svc.create_team("a", NOW)
    svc.create_team("b", NOW)
    svc.create_user("ann", "a", "member", PW, NOW)
    svc.create_user("bob", "b", "member", PW, NOW)
    svc.create_service_account("ci-bot", "a", NOW)
    return svc


def test_login_uniform_errors(ids: IdentityService) -> None:
    pair = ids.login("ann", PW, NOW)
    assert ids.authenticate(pair.access_token, NOW).team == "a"
    with pytest.raises(AuthenticationFailed) as wrong_pw:
        ids.login("ann", "wrong password!!", NOW)
    with pytest.raises(AuthenticationFailed) as no_user:
        ids.login("nobody-here", PW, NOW)
    assert wrong_pw.value.message == no_user.value.message == "invalid or expired credentials"
    assert wrong_pw.value.hint == no_user.value.hint


def test_directory_errors_name_the_fix(ids: IdentityService) -> None:
    with pytest.raises(Conflict, match="user 'ann' already exists"):
        ids.create_user("ann", "a", "member", PW, NOW)
    with pytest.raises(NotFound, match="team 'zzz'"):
        ids.create_user("cy", "zzz", "member", PW, NOW)
    with pytest.raises(SecurityConfigError, match="too short"):
        ids.create_user("cy", "a", "member", "short", NOW)
    with pytest.raises(SecurityConfigError, match="unknown role"):
        ids.create_user("cy", "a", "root", PW, NOW)


def test_totp_enrolment_login_and_step_up(ids: IdentityService) -> None:
    enrol = ids.enroll_totp("ann")
    assert enrol.uri.startswith("otpauth://totp/")
    ids.confirm_totp("ann", totp.code_at(enrol.secret, NOW), NOW)
    with pytest.raises(AuthenticationFailed, match="invalid"):
        ids.login("ann", PW, NOW + 30)  # code now required
    t1 = NOW + 60
    pair = ids.login("ann", PW, t1, totp_code=totp.code_at(enrol.secret, t1))
    assert pair.principal.mfa_at == t1
    with pytest.raises(AuthenticationFailed):  # the same code cannot be used twice
        ids.login("ann", PW, t1, totp_code=totp.code_at(enrol.secret, t1))
    t2 = t1 + 90
    fresh = ids.step_up(pair.access_token, totp.code_at(enrol.secret, t2), t2)
    assert ids.authenticate(fresh.access_token, t2).mfa_at == t2
    with pytest.raises(AuthenticationFailed, match="invalid"):  # the pre-step-up token is revoked
        ids.authenticate(pair.access_token, t2)


def test_tokens_expire_revoke_refresh_and_detect_replay(ids: IdentityService) -> None:
    pair = ids.login("ann", PW, NOW)
    with pytest.raises(AuthenticationFailed):
        ids.authenticate(pair.access_token, NOW + 301)  # expired
    new = ids.refresh(pair.refresh_token, NOW + 301)
    assert ids.authenticate(new.access_token, NOW + 302).id == "ann"
    with pytest.raises(AuthenticationFailed, match="reused"):
        ids.refresh(pair.refresh_token, NOW + 303)  # replay of a spent refresh token
    with pytest.raises(AuthenticationFailed):
        ids.refresh(new.refresh_token, NOW + 304)  # ... revoked the whole family
    other = ids.login("ann", PW, NOW + 400)
    ids.revoke_access_token(other.access_token, NOW + 401)
    with pytest.raises(AuthenticationFailed, match="invalid"):
        ids.authenticate(other.access_token, NOW + 402)
    ids.disable_user("bob")
    with pytest.raises(AuthenticationFailed):
        ids.login("bob", PW, NOW)


def test_other_teams_token_carries_its_own_team(ids: IdentityService) -> None:
    bob = ids.authenticate(ids.login("bob", PW, NOW).access_token, NOW)
    assert (bob.id, bob.team) == ("bob", "b")


def test_token_from_another_deployment_is_rejected(engine: Engine, ids: IdentityService) -> None:
    stranger = IdentityService(engine, TokenKey.generate(), fast_hashing=True)
    token = stranger.login("ann", PW, NOW).access_token
    with pytest.raises(AuthenticationFailed):
        ids.authenticate(token, NOW)


def test_api_keys_are_scoped_hashed_and_revocable(engine: Engine, ids: IdentityService) -> None:
    key = ids.issue_api_key("ci-bot", ["jobs:write", "jobs:read"], NOW, ttl_s=3600)
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT secret_hash FROM security_api_keys").scalar_one()
    assert key.split("_", 2)[2] not in stored
    p = ids.authenticate(key, NOW)
    assert (p.kind, p.team, p.scopes) == ("service", "a", ("jobs:read", "jobs:write"))
    with pytest.raises(AuthenticationFailed):
        ids.authenticate(key[:-2] + "xx", NOW)
    with pytest.raises(AuthenticationFailed):
        ids.authenticate(key, NOW + 3600)
    ids.revoke_api_key(key, NOW)
    with pytest.raises(AuthenticationFailed):
        ids.authenticate(key, NOW + 1)
    with pytest.raises(NotFound):
        ids.issue_api_key("ghost", ["jobs:read"], NOW)


def test_device_registration_and_challenge(ids: IdentityService) -> None:
    device = Ed25519PrivateKey.generate()
    pub = device.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    fp = ids.register_device("ann", pub, NOW)
    assert fp == fingerprint(pub)
    nonce = ids.device_challenge(fp, NOW)
    sig = device.sign(challenge_message(nonce, fp))
    assert ids.verify_device(fp, nonce, sig, NOW + 5)
    assert not ids.verify_device(fp, nonce, sig, NOW + 6)  # one use per challenge
    nonce2 = ids.device_challenge(fp, NOW)
    assert not ids.verify_device(
        fp, nonce2, Ed25519PrivateKey.generate().sign(challenge_message(nonce2, fp)), NOW
    )
    nonce3 = ids.device_challenge(fp, NOW)
    assert not ids.verify_device(
        fp, nonce3, device.sign(challenge_message(nonce3, fp)), NOW + 1000
    )  # expired
    n4 = ids.device_challenge(fp, NOW)
    pair = ids.login("ann", PW, NOW, device=DeviceProof(fp, n4, device.sign(challenge_message(n4, fp))))
    assert ids.authenticate(pair.access_token, NOW).device == fp
    with pytest.raises(AuthenticationFailed):  # the fingerprint alone proves nothing
        ids.login("ann", PW, NOW, device=DeviceProof(fp, n4, sig))
    n5 = ids.device_challenge(fp, NOW)
    with pytest.raises(AuthenticationFailed):  # someone else's device
        ids.login("bob", PW, NOW, device=DeviceProof(fp, n5, device.sign(challenge_message(n5, fp))))
    with pytest.raises(SecurityConfigError, match="32 raw"):
        ids.register_device("ann", b"short", NOW)


def test_brute_force_lockout_is_the_same_for_real_and_unknown_users(ids: IdentityService) -> None:
    from modelplane.security.errors import TooManyAttempts

    for name in ("ann", "no-such-user"):
        for k in range(5):
            with pytest.raises(AuthenticationFailed):
                ids.login(name, "wrong password!!", NOW + k)
        with pytest.raises(TooManyAttempts) as locked:
            ids.login(name, PW, NOW + 10)  # even the right password waits
        assert locked.value.status_code == 429
    pair = ids.login("ann", PW, NOW + 5 + 61)  # lock over after 60 s
    assert ids.authenticate(pair.access_token, NOW + 70).id == "ann"


def test_source_address_is_throttled_across_accounts(ids: IdentityService) -> None:
    from modelplane.security.errors import TooManyAttempts

    for k in range(5):
        with pytest.raises(AuthenticationFailed):
            ids.login(f"guess{k}", "wrong password!!", NOW, source_ip="203.0.113.9")
    with pytest.raises(TooManyAttempts):
        ids.login("bob", PW, NOW + 1, source_ip="203.0.113.9")
    assert ids.login("bob", PW, NOW + 1, source_ip="10.0.0.1").principal.id == "bob"


def test_step_up_guessing_is_throttled(ids: IdentityService) -> None:
    from modelplane.security.errors import TooManyAttempts

    enrol = ids.enroll_totp("bob")
    ids.confirm_totp("bob", totp.code_at(enrol.secret, NOW), NOW)
    token = ids.login("bob", PW, NOW + 60, totp_code=totp.code_at(enrol.secret, NOW + 60)).access_token
    near = {totp.code_at(enrol.secret, NOW + 61 + d) for d in (-30, 0, 30)}
    wrong = next(c for c in ("000000", "111111", "222222", "333333") if c not in near)
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            ids.step_up(token, wrong, NOW + 61)
    with pytest.raises(TooManyAttempts):
        ids.step_up(token, totp.code_at(enrol.secret, NOW + 95), NOW + 95)
