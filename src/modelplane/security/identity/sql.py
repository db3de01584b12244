"""Identities and credentials persisted in SQL, behind one facade the API calls.

Failure messages for login, MFA and tokens are uniform (``invalid or expired credentials``) so a
caller cannot learn whether a user exists. Secrets (refresh tokens, API keys, device challenges)
are stored only as hashes.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from modelplane.core.errors import Conflict, NotFound
from modelplane.security.errors import AuthenticationFailed, SecurityConfigError
from modelplane.security.identity import devices, passwords, totp
from modelplane.security.identity.throttle import LoginThrottle
from modelplane.security.identity.tokens import (
    DEFAULT_ACCESS_TTL_S,
    DEFAULT_REFRESH_TTL_S,
    INVALID,
    TokenKey,
    issue_access_token,
    new_secret,
    secret_hash,
    verify_access_token,
)
from modelplane.security.principal import ROLES, Principal, TokenPair

metadata = MetaData()

teams = Table(
    "security_teams",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("created_at", Float, nullable=False),
)
users = Table(
    "security_users",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("team", String(128), nullable=False),
    Column("role", String(32), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("totp_secret", String(64), nullable=True),
    Column("totp_confirmed", Boolean, nullable=False, default=False),
    Column("totp_last_step", Integer, nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
)
service_accounts = Table(
    "security_service_accounts",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("team", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
)
api_keys = Table(
    "security_api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("account", String(128), nullable=False, index=True),
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
)
refresh_tokens = Table(
    "security_refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("family", String(32), nullable=False, index=True),
    Column("subject", String(128), nullable=False, index=True),
    Column("claims", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
)
revoked_tokens = Table(
    "security_revoked_tokens",
    metadata,
    Column("jti", String(32), primary_key=True),
    Column("expires_at", Float, nullable=False),
)
device_keys = Table(
    "security_devices",
    metadata,
    Column("fingerprint", String(80), primary_key=True),
    Column("subject", String(128), nullable=False, index=True),
    Column("public_key", LargeBinary(32), nullable=False),
    Column("registered_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)
device_challenges = Table(
    "security_device_challenges",
    metadata,
    Column("nonce_hash", String(64), primary_key=True),
    Column("fingerprint", String(80), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float, nullable=True),
)

TABLE_NAMES = tuple(metadata.tables)
CHALLENGE_TTL_S = 120.0


@dataclass(frozen=True)
class DeviceProof:
    """A registered device's signature over a challenge the server issued (see ``device_challenge``)."""

    fingerprint: str
    nonce: str
    signature: bytes


@dataclass(frozen=True)
class TotpEnrolment:
    secret: str
    uri: str


class IdentityService:
    """Users, teams, service accounts and every credential they hold."""

    def __init__(
        self,
        engine: Engine,
        token_key: TokenKey,
        *,
        fast_hashing: bool = False,
        access_ttl_s: float = DEFAULT_ACCESS_TTL_S,
        refresh_ttl_s: float = DEFAULT_REFRESH_TTL_S,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.engine = engine
        self.throttle = throttle or LoginThrottle()
        self.token_key = token_key
        self.public_key = token_key.public_key
        self.hasher = passwords.make_hasher(fast=fast_hashing)
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        # A real hash to verify against when the user does not exist: same time either way.
        self._dummy_hash = self.hasher.hash(secrets.token_hex(16))
        metadata.create_all(engine)

    # ------------------------------------------------------------ directory
    def create_team(self, name: str, now: float) -> None:
        self._insert(teams, {"name": name, "created_at": now}, f"team {name!r}")

    def create_user(self, name: str, team: str, role: str, password: str, now: float) -> None:
        self._check_role(role, allow_service=False)
        self._require_team(team)
        pw_hash = passwords.hash_password(self.hasher, password)
        self._insert(
            users,
            {
                "name": name,
                "team": team,
                "role": role,
                "password_hash": pw_hash,
                "totp_confirmed": False,
                "disabled": False,
                "created_at": now,
            },
            f"user {name!r}",
        )

    def create_service_account(self, name: str, team: str, now: float) -> None:
        self._require_team(team)
        self._insert(
            service_accounts, {"name": name, "team": team, "created_at": now}, f"service account {name!r}"
        )

    def disable_user(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(users).where(users.c.name == name).values(disabled=True))
            conn.execute(
                update(refresh_tokens).where(refresh_tokens.c.subject == name).values(revoked_at=0.0)
            )

    # ------------------------------------------------------------ login and MFA
    def login(
        self,
        name: str,
        password: str,
        now: float,
        *,
        totp_code: str | None = None,
        device: DeviceProof | None = None,
        source_ip: str | None = None,
    ) -> TokenPair:
        """Password (+ TOTP when enrolled) -> token pair. One uniform error for every failure."""
        keys = [f"user:{name}"] + ([f"ip:{source_ip}"] if source_ip else [])
        self.throttle.check(keys, now)
        try:
            pair = self._login(name, password, now, totp_code, device)
        except AuthenticationFailed:
            self.throttle.failure(keys, now)
            raise
        self.throttle.success(keys[:1])
        return pair

    def _login(
        self, name: str, password: str, now: float, totp_code: str | None, device: DeviceProof | None
    ) -> TokenPair:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
        stored = row.password_hash if row is not None else self._dummy_hash
        ok = passwords.verify_password(self.hasher, stored, password)
        if row is None or not ok or row.disabled:
            raise AuthenticationFailed(INVALID)
        mfa_at = None
        if row.totp_confirmed:
            if totp_code is None:
                raise AuthenticationFailed(INVALID, hint="this account needs a TOTP code")
            mfa_at = self._check_totp(name, row.totp_secret, totp_code, now, row.totp_last_step)
        fp = None
        if device is not None:
            if not self._device_belongs(device.fingerprint, name) or not self.verify_device(
                device.fingerprint, device.nonce, device.signature, now
            ):
                raise AuthenticationFailed(INVALID, hint="device proof failed; sign a fresh challenge")
            fp = device.fingerprint
        principal = Principal(name, "user", row.team, row.role, mfa_at=mfa_at, device=fp)
        return self._issue_pair(principal, now, family=secrets.token_hex(16))

    def enroll_totp(self, name: str) -> TotpEnrolment:
        secret = totp.new_secret()
        with self.engine.begin() as conn:
            n = conn.execute(
                update(users)
                .where(users.c.name == name)
                .values(totp_secret=secret, totp_confirmed=False, totp_last_step=None)
            ).rowcount
        if n == 0:
            raise NotFound(f"user {name!r} does not exist")
        return TotpEnrolment(secret, totp.provisioning_uri(secret, name))

    def confirm_totp(self, name: str, code: str, now: float) -> None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
        if row is None or row.totp_secret is None:
            raise AuthenticationFailed(INVALID, hint="start TOTP enrolment first")
        self._check_totp(name, row.totp_secret, code, now, row.totp_last_step)
        with self.engine.begin() as conn:
            conn.execute(update(users).where(users.c.name == name).values(totp_confirmed=True))

    def step_up(self, access_token: str, code: str, now: float) -> TokenPair:
        """Fresh TOTP -> a new token pair with ``mfa_at = now`` (what risk-based step-up asks for)."""
        principal = self.authenticate(access_token, now)
        keys = [f"mfa:{principal.id}"]
        self.throttle.check(keys, now)
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == principal.id)).first()
        if row is None or not row.totp_confirmed:
            raise AuthenticationFailed(INVALID, hint="enrol a TOTP authenticator first")
        try:
            mfa_at = self._check_totp(principal.id, row.totp_secret, code, now, row.totp_last_step)
        except AuthenticationFailed:
            self.throttle.failure(keys, now)
            raise
        self.throttle.success(keys)
        self.revoke_access_token(access_token, now)
        fresh = Principal(principal.id, "user", row.team, row.role, mfa_at=mfa_at, device=principal.device)
        return self._issue_pair(fresh, now, family=secrets.token_hex(16))

    def _check_totp(self, name: str, secret: str, code: str, now: float, last: int | None) -> float:
        step = totp.verify_code(secret, code, now, last_counter=last)
        if step is None:
            raise AuthenticationFailed(INVALID, hint="wrong, expired or already used TOTP code")
        with self.engine.begin() as conn:
            # Compare-and-set so two concurrent uses of one code cannot both win.
            cond = users.c.totp_last_step.is_(None) if last is None else users.c.totp_last_step == last
            n = conn.execute(
                update(users).where(users.c.name == name, cond).values(totp_last_step=step)
            ).rowcount
        if n != 1:
            raise AuthenticationFailed(INVALID, hint="TOTP code already used")
        return now

    # ------------------------------------------------------------ tokens
    def _issue_pair(self, principal: Principal, now: float, family: str) -> TokenPair:
        access, jti, exp = issue_access_token(self.token_key, principal, now, self.access_ttl_s)
        refresh = new_secret("mprt")
        claims = {
            "sub": principal.id,
            "kind": principal.kind,
            "team": principal.team,
            "role": principal.role,
            "mfa_at": principal.mfa_at,
            "dev": principal.device,
        }
        with self.engine.begin() as conn:
            conn.execute(
                insert(refresh_tokens).values(
                    token_hash=secret_hash(refresh),
                    family=family,
                    subject=principal.id,
                    claims=json.dumps(claims),
                    expires_at=now + self.refresh_ttl_s,
                )
            )
        return TokenPair(access, refresh, exp, dataclasses.replace(principal, token_id=jti))

    def authenticate(self, credential: str, now: float) -> Principal:
        """Bearer access token or service-account API key -> Principal, or ``AuthenticationFailed``."""
        if credential.startswith("mpk_"):
            return self._authenticate_api_key(credential, now)
        principal, _ = verify_access_token(self.public_key, credential, now)
        with self.engine.connect() as conn:
            revoked = (
                conn.execute(
                    select(revoked_tokens.c.jti).where(revoked_tokens.c.jti == principal.token_id)
                ).first()
                is not None
            )
            if principal.kind == "user":
                row = conn.execute(select(users.c.disabled).where(users.c.name == principal.id)).first()
                if row is None or row.disabled:
                    revoked = True
        if revoked:
            raise AuthenticationFailed(INVALID, hint="the token was revoked; log in again")
        return principal

    def refresh(self, refresh_token: str, now: float) -> TokenPair:
        """Rotate: the old refresh token is spent; reusing a spent one revokes the whole family."""
        h = secret_hash(refresh_token)
        with self.engine.begin() as conn:
            row = conn.execute(select(refresh_tokens).where(refresh_tokens.c.token_hash == h)).first()
            if row is None or row.revoked_at is not None or row.expires_at <= now:
                raise AuthenticationFailed(INVALID, hint="log in again")
            spent = conn.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.token_hash == h, refresh_tokens.c.used_at.is_(None))
                .values(used_at=now)
            ).rowcount
            if spent != 1:
                conn.execute(
                    update(refresh_tokens).where(refresh_tokens.c.family == row.family).values(revoked_at=now)
                )
        if spent != 1:
            raise AuthenticationFailed(
                INVALID, hint="refresh token reused: all sessions of this login were revoked"
            )
        c = json.loads(row.claims)
        with self.engine.connect() as conn:
            user = conn.execute(select(users.c.disabled).where(users.c.name == c["sub"])).first()
        if c["kind"] == "user" and (user is None or user.disabled):
            raise AuthenticationFailed(INVALID)
        principal = Principal(c["sub"], c["kind"], c["team"], c["role"], mfa_at=c["mfa_at"], device=c["dev"])
        return self._issue_pair(principal, now, family=row.family)

    def revoke_access_token(self, access_token: str, now: float) -> None:
        principal, exp = verify_access_token(self.public_key, access_token, now)
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(revoked_tokens.c.jti).where(revoked_tokens.c.jti == principal.token_id)
            )
            if exists.first() is None:
                conn.execute(insert(revoked_tokens).values(jti=principal.token_id, expires_at=exp))

    def logout(self, access_token: str, refresh_token: str, now: float) -> None:
        self.revoke_access_token(access_token, now)
        with self.engine.begin() as conn:
            row = conn.execute(
                select(refresh_tokens.c.family).where(
                    refresh_tokens.c.token_hash == secret_hash(refresh_token)
                )
            ).first()
            if row is not None:
                conn.execute(
                    update(refresh_tokens).where(refresh_tokens.c.family == row.family).values(revoked_at=now)
                )

    def purge_expired(self, now: float) -> int:
        """Drop revocation records for tokens that have expired anyway."""
        with self.engine.begin() as conn:
            return int(
                conn.execute(revoked_tokens.delete().where(revoked_tokens.c.expires_at <= now)).rowcount
            )

    # ------------------------------------------------------------ API keys
    def issue_api_key(
        self, account: str, scopes: Sequence[str], now: float, ttl_s: float | None = None
    ) -> str:
        """Return the key once (``mpk_<id>_<secret>``); only its hash is stored."""
        self._require(service_accounts, account, "service account")
        if not scopes:
            raise SecurityConfigError(
                "an API key needs at least one scope", hint="e.g. ['jobs:read']", field="scopes"
            )
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(
                insert(api_keys).values(
                    key_id=key_id,
                    account=account,
                    secret_hash=secret_hash(secret),
                    scopes=json.dumps(sorted(scopes)),
                    created_at=now,
                    expires_at=None if ttl_s is None else now + ttl_s,
                )
            )
        return f"mpk_{key_id}_{secret}"

    def revoke_api_key(self, key: str, now: float) -> None:
        key_id = key.split("_")[1] if key.startswith("mpk_") else key
        with self.engine.begin() as conn:
            conn.execute(update(api_keys).where(api_keys.c.key_id == key_id).values(revoked_at=now))

    def _authenticate_api_key(self, key: str, now: float) -> Principal:
        parts = key.split("_", 2)
        if len(parts) != 3:
            raise AuthenticationFailed(INVALID)
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_id == parts[1])).first()
            acct = (
                None
                if row is None
                else conn.execute(
                    select(service_accounts).where(service_accounts.c.name == row.account)
                ).first()
            )
        if (
            row is None
            or acct is None
            or not hmac.compare_digest(row.secret_hash, secret_hash(parts[2]))
            or row.revoked_at is not None
            or (row.expires_at is not None and row.expires_at <= now)
        ):
            raise AuthenticationFailed(INVALID, hint="check the API key; it may have been revoked or expired")
        return Principal(
            row.account,
            "service",
            acct.team,
            "service",
            scopes=tuple(json.loads(row.scopes)),
            token_id=row.key_id,
        )

    # ------------------------------------------------------------ devices
    def register_device(self, subject: str, public_key: bytes, now: float) -> str:
        fp = devices.fingerprint(public_key)
        self._insert(
            device_keys,
            {"fingerprint": fp, "subject": subject, "public_key": public_key, "registered_at": now},
            f"device {fp}",
        )
        return fp

    def device_challenge(self, fp: str, now: float) -> str:
        nonce = secrets.token_urlsafe(24)
        with self.engine.begin() as conn:
            conn.execute(
                insert(device_challenges).values(
                    nonce_hash=secret_hash(nonce), fingerprint=fp, expires_at=now + CHALLENGE_TTL_S
                )
            )
        return nonce

    def verify_device(self, fp: str, nonce: str, signature: bytes, now: float) -> bool:
        """True once per challenge, if the registered key of ``fp`` signed it in time."""
        with self.engine.begin() as conn:
            dev = conn.execute(select(device_keys).where(device_keys.c.fingerprint == fp)).first()
            spent = conn.execute(
                update(device_challenges)
                .where(
                    device_challenges.c.nonce_hash == secret_hash(nonce),
                    device_challenges.c.fingerprint == fp,
                    device_challenges.c.used_at.is_(None),
                    device_challenges.c.expires_at > now,
                )
                .values(used_at=now)
            ).rowcount
        if dev is None or dev.revoked_at is not None or spent != 1:
            return False
        return devices.verify_device_signature(bytes(dev.public_key), nonce, signature)

    def _device_belongs(self, fp: str, subject: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(select(device_keys).where(device_keys.c.fingerprint == fp)).first()
        return row is not None and row.subject == subject and row.revoked_at is None

    # ------------------------------------------------------------ helpers
    def _insert(self, table: Table, values: dict[str, object], what: str) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(table).values(**values))
        except IntegrityError as exc:
            raise Conflict(f"{what} already exists", hint="pick another name") from exc

    def _require(self, table: Table, name: str, what: str) -> None:
        with self.engine.connect() as conn:
            if conn.execute(select(table.c.name).where(table.c.name == name)).first() is None:
                raise NotFound(f"{what} {name!r} does not exist", hint=f"create the {what} first")

    def _require_team(self, team: str) -> None:
        self._require(teams, team, "team")

    @staticmethod
    def _check_role(role: str, *, allow_service: bool) -> None:
        allowed = [r for r in ROLES if allow_service or r != "service"]
        if role not in allowed:
            raise SecurityConfigError(
                f"unknown role {role!r}", hint=f"use one of {', '.join(allowed)}", field="role"
            )
