"""One call per API request: authenticate -> score risk -> authorize -> audit.

The API middleware calls ``SecurityGate.check`` before a handler and ``record_outcome`` after a
state-changing one; handlers never touch security directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from modelplane.core.errors import Forbidden
from modelplane.security.audit.entry import AuditEntry
from modelplane.security.authz.engine import Authorizer, Decision
from modelplane.security.authz.sql import PolicyStore, PolicyVersion
from modelplane.security.errors import AuthenticationFailed, MfaRequired, ModelplaneError, TooManyAttempts
from modelplane.security.identity.sql import DeviceProof, IdentityService
from modelplane.security.principal import Principal, TokenPair
from modelplane.security.risk import RequestEvent, RiskScore, RiskScorer


class Authenticator(Protocol):
    def authenticate(self, credential: str, now: float) -> Principal: ...


class AuditSink(Protocol):
    def record(self, entry: AuditEntry) -> int: ...


@dataclass(frozen=True)
class Request:
    credential: str | None
    action: str  # "read" | "write"
    resource: Mapping[str, Any]  # {"type": "Job", "id": ..., "owner_team": ...}
    operation: str  # e.g. "POST /v1/jobs"
    source_ip: str
    now: float
    request_id: str
    bytes_read: int = 0
    extra_context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Admitted:
    principal: Principal
    decision: Decision
    risk: RiskScore


class SecurityGate:
    def __init__(
        self,
        identities: Authenticator,
        authorizer: Authorizer | Callable[[], Authorizer],
        risk: RiskScorer,
        audit: AuditSink,
    ) -> None:
        self.identities = identities
        self._authorizer = authorizer
        self.risk = risk
        self.audit = audit

    def authorizer(self) -> Authorizer:
        a = self._authorizer
        return a if isinstance(a, Authorizer) else a()

    def _resource_name(self, req: Request) -> str:
        return f"{req.resource.get('type', '?')}/{req.resource.get('id', '')}"

    def _audit(self, req: Request, operator: str, outcome: str, details: Mapping[str, str]) -> None:
        self.audit.record(
            AuditEntry(
                operator, req.operation, self._resource_name(req), req.now, outcome, req.request_id, details
            )
        )

    def check(self, req: Request) -> Admitted:
        """Raise AuthenticationFailed (401), MfaRequired or Forbidden (403), each audited; else admit."""
        if not req.credential:
            self._audit(req, "anonymous", "denied", {"stage": "authn", "why": "no credential"})
            raise AuthenticationFailed(
                "invalid or expired credentials", hint="send a bearer token or API key"
            )
        try:
            principal = self.identities.authenticate(req.credential, req.now)
        except AuthenticationFailed:
            self._audit(req, "unknown", "denied", {"stage": "authn", "why": "bad credential"})
            raise
        risk = self.risk.assess(
            RequestEvent(principal.id, req.now, req.source_ip, principal.device, req.bytes_read)
        )
        context = {
            **req.extra_context,
            "risk_score": risk.score,
            "hour": int(req.now // 3600) % 24,
            "source_ip": req.source_ip,
        }
        decision = self.authorizer().authorize(
            {"id": principal.id, **principal.attributes(req.now)}, req.action, req.resource, context
        )
        if not decision.allowed:
            details = {
                "stage": "authz",
                "policies": ",".join(decision.reasons),
                "risk": str(risk.score),
                "risk_reasons": ",".join(r.code for r in risk.reasons),
            }
            if risk.alert:
                details["alert"] = "risk"
            self._audit(req, principal.id, "denied", details)
            if decision.step_up:
                raise MfaRequired(
                    "this request needs a fresh second factor",
                    hint="POST your current TOTP code to the step-up endpoint, then retry",
                )
            raise Forbidden("not allowed by policy", hint="ask an admin of the owning team for access")
        if req.action == "write":
            self._audit(req, principal.id, "allowed", {"stage": "authz", "risk": str(risk.score)})
        return Admitted(principal, decision, risk)

    # ---------------------------------------------------------- audited credential calls
    def login(
        self,
        identities: IdentityService,
        name: str,
        password: str,
        *,
        now: float,
        request_id: str,
        source_ip: str,
        totp_code: str | None = None,
        device: DeviceProof | None = None,
    ) -> TokenPair:
        """``IdentityService.login`` with the attempt in the audit log (failures under the claimed name)."""
        req = Request(
            None, "write", {"type": "Identity", "id": name}, "auth.login", source_ip, now, request_id
        )
        try:
            pair = identities.login(
                name, password, now, totp_code=totp_code, device=device, source_ip=source_ip
            )
        except (AuthenticationFailed, TooManyAttempts) as exc:
            self._audit(req, name, "denied", {"stage": "login", "why": type(exc).__name__})
            raise
        details = {"stage": "login", "mfa": str(pair.principal.mfa_at is not None)}
        self._audit(req, name, "succeeded", details)
        return pair

    def step_up(
        self,
        identities: IdentityService,
        access_token: str,
        code: str,
        *,
        now: float,
        request_id: str,
        source_ip: str,
    ) -> TokenPair:
        req = Request(
            access_token,
            "write",
            {"type": "Identity", "id": "mfa"},
            "auth.step_up",
            source_ip,
            now,
            request_id,
        )
        try:
            pair = identities.step_up(access_token, code, now)
        except (AuthenticationFailed, TooManyAttempts) as exc:
            self._audit(req, "unknown", "denied", {"stage": "mfa", "why": type(exc).__name__})
            raise
        self._audit(req, pair.principal.id, "succeeded", {"stage": "mfa"})
        return pair

    def update_policies(
        self, store: PolicyStore, req: Request, text: str, expected_version: int
    ) -> PolicyVersion:
        """Authorize (write on Policy), validate, store a new version, audit either way."""
        admitted = self.check(replace(req, action="write", resource={"type": "Policy", "id": "active"}))
        try:
            version = store.update(
                text, author=admitted.principal.id, now=req.now, expected_version=expected_version
            )
        except ModelplaneError as exc:
            self._audit(req, admitted.principal.id, "failed", {"stage": "policy", "why": exc.message[:200]})
            raise
        self._audit(
            req, admitted.principal.id, "succeeded", {"stage": "policy", "version": str(version.version)}
        )
        return version

    def record_outcome(self, req: Request, principal: Principal, succeeded: bool, detail: str = "") -> None:
        """After a state-changing handler ran: its result joins the log."""
        outcome = "succeeded" if succeeded else "failed"
        self._audit(req, principal.id, outcome, {"detail": detail} if detail else {})
