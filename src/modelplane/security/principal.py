"""Who is calling: the authenticated subject every later stage (authz, risk, audit) reads."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("admin", "member", "auditor", "service")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``mfa_at`` is when the second factor was last shown (None: never)."""

    id: str
    kind: str  # "user" | "service"
    team: str
    role: str
    scopes: tuple[str, ...] = ()
    mfa_at: float | None = None
    device: str | None = None  # fingerprint of a registered device that proved possession
    token_id: str | None = None

    def mfa_age(self, now: float) -> float | None:
        return None if self.mfa_at is None else max(0.0, now - self.mfa_at)

    def attributes(self, now: float) -> dict[str, object]:
        """Flat attributes for policy evaluation (Cedar entity attrs)."""
        age = self.mfa_age(now)
        return {
            "kind": self.kind,
            "team": self.team,
            "role": self.role,
            "scopes": list(self.scopes),
            "mfa": age is not None,
            "mfa_age_s": -1 if age is None else int(age),
            "device_trusted": self.device is not None,
        }


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_at: float
    principal: Principal = field(repr=False)
