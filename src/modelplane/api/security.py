"""The security library wired into the API: one guard for every route, audit on every write.

``ApiSecurity`` owns the per-process security services (identities, the Cedar authorizer cached per
policy version, risk scoring, the group-commit audit recorder and its checkpoint signer). The
``guard`` dependency runs for every ``/api/v1`` route and ``/metrics``: it looks the route up in
``RULES`` (route -> action + resource resolver), authenticates once, resolves the resource's
attributes, and calls ``SecurityGate.check``. The ``audit_middleware`` records the outcome of every
admitted write and waits until the request's audit entries are durable before answering.

Keys live in ``<home>/keys`` (mode 0600): ``token.key`` signs access tokens, ``audit.skey`` signs
audit checkpoints; ``audit.vkey`` is the public verifier key the CLI pins. Neither is in the
database, so a database writer can neither mint tokens nor re-sign a rewritten log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine, select
from starlette.responses import Response

from modelplane.core.errors import Conflict, ModelplaneError, NotFound
from modelplane.security.audit.entry import AuditEntry
from modelplane.security.audit.note import NoteSigner, NoteVerifier
from modelplane.security.audit.pseudonym import Pseudonymizer
from modelplane.security.audit.recorder import GroupCommitRecorder
from modelplane.security.audit.sql import DEFAULT_RETENTION_S, AuditLog, make_sqlite_durable
from modelplane.security.authz.defaults import PLATFORM_POLICIES
from modelplane.security.authz.engine import Authorizer
from modelplane.security.authz.sql import PolicyStore
from modelplane.security.errors import AuthenticationFailed
from modelplane.security.gate import Admitted, SecurityGate
from modelplane.security.gate import Request as GateRequest
from modelplane.security.identity import sql as identity_sql
from modelplane.security.identity.sql import IdentityService
from modelplane.security.identity.tokens import TokenKey
from modelplane.security.principal import Principal
from modelplane.security.risk import RequestEvent, RiskConfig, RiskScore, RiskScorer
from modelplane.store import Store

log = logging.getLogger("modelplane.api.security")

ADMIN_NAME = "admin"
ADMIN_TEAM = "platform"
ADMIN_SCOPE = "role:admin"  # an API key with this scope acts with the admin role
AUDIT_ORIGIN = "modelplane.local/audit"
CHECKPOINT_INTERVAL_S = 2.0
PRUNE_INTERVAL_S = 3600.0  # retention is counted in months: hourly pruning is plenty
POLICY_RECHECK_S = 2.0
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a client's X-Request-Id, else one is generated


# --------------------------------------------------------------------------- keys
def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


@dataclass(frozen=True)
class KeyRing:
    """The two signing keys of this deployment, created at first start under ``<home>/keys``."""

    token_key: TokenKey
    audit_signer: NoteSigner

    @classmethod
    def load_or_create(cls, home: Path) -> KeyRing:
        keys = home / "keys"
        token_path, audit_path = keys / "token.key", keys / "audit.skey"
        if not token_path.exists():
            _write_secret(token_path, TokenKey.generate().private_key.hex())
        if not audit_path.exists():
            signer = NoteSigner.generate(AUDIT_ORIGIN)
            _write_secret(audit_path, signer.skey)
            (keys / "audit.vkey").write_text(signer.verifier.vkey + "\n")
        try:
            token_key = TokenKey(bytes.fromhex(token_path.read_text().strip()))
            signer = NoteSigner.from_skey(audit_path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise ModelplaneError(f"cannot read the signing keys in {keys}: {exc}",
                                  hint="restore the key files from backup; never edit them by hand") from None
        return cls(token_key, signer)


# --------------------------------------------------------------------------- helpers
class PolicyCache:
    """The Cedar authorizer for the newest policy version, re-read at most every few seconds."""

    def __init__(self, store: PolicyStore, recheck_s: float = POLICY_RECHECK_S) -> None:
        self.store = store
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._authorizer: Authorizer | None = None
        self._checked_at = float("-inf")

    def get(self) -> Authorizer:
        now = time.monotonic()
        cached = self._authorizer
        if cached is not None and now - self._checked_at < self.recheck_s:
            return cached
        with self._lock:
            if self._authorizer is None or now - self._checked_at >= self.recheck_s:
                self._authorizer = self.store.authorizer()
                self._checked_at = now
            return self._authorizer

    def invalidate(self) -> None:
        self._checked_at = float("-inf")


_current_kind = threading.local()


class ApiAuthenticator:
    """``IdentityService.authenticate``, plus: an API key scoped ``role:admin`` carries the admin role."""

    def __init__(self, identities: IdentityService) -> None:
        self.identities = identities

    def authenticate(self, credential: str, now: float) -> Principal:
        principal = self.identities.authenticate(credential, now)
        if principal.kind == "service" and ADMIN_SCOPE in principal.scopes:
            principal = replace(principal, role="admin")
        _current_kind.value = principal.kind
        return principal


class KindAwareRiskScorer(RiskScorer):
    """Users and service accounts have different normal: a machine has no device and no office hours.

    The gate authenticates and then scores in the same thread, so the kind the authenticator saw
    picks the baseline configuration.
    """

    def __init__(self, users: RiskConfig | None = None, services: RiskConfig | None = None) -> None:
        super().__init__(users)
        self.services = RiskScorer(services or RiskConfig(no_device_points=0, new_device_points=0,
                                                          odd_hour_points=0))
        self._lock = threading.Lock()

    def assess(self, event: RequestEvent) -> RiskScore:
        with self._lock:
            if getattr(_current_kind, "value", "user") == "service":
                return self.services.assess(event)
            return super().assess(event)


class _Known:
    """An authenticator answering with a principal (or failure) already established for this request."""

    def __init__(self, principal: Principal | None, error: AuthenticationFailed | None) -> None:
        self.principal, self.error = principal, error

    def authenticate(self, credential: str, now: float) -> Principal:
        if self.principal is None:
            raise self.error or AuthenticationFailed("invalid or expired credentials")
        return self.principal


class PendingAudit:
    """Audit sink for one request: entries are held until the response is ready, then handed to the
    group-commit recorder together (one shared durable transaction), and the response waits for them."""

    def __init__(self, recorder: GroupCommitRecorder) -> None:
        self.recorder = recorder
        self.entries: list[AuditEntry] = []

    def record(self, entry: AuditEntry) -> int:
        self.entries.append(entry)
        return -1  # the index is known once committed; callers here never need it

    def submit(self) -> list[Future[int]]:
        futures = [self.recorder.submit(e) for e in self.entries]
        self.entries = []
        return futures


def source_ip(request: Request) -> str:
    host = request.client.host if request.client else ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "0.0.0.0"  # in-process test clients have no address
    return host


def bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


# --------------------------------------------------------------------------- services
class ApiSecurity:
    """Every security service the API process holds; the API process is the only audit writer."""

    def __init__(self, store: Store, home: Path, *, fast_hashing: bool = False,
                 checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S, risk: RiskScorer | None = None,
                 retention_s: float = DEFAULT_RETENTION_S) -> None:
        self.store = store
        self.home = home
        self.keys = KeyRing.load_or_create(home)
        self.identities = IdentityService(store.engine, self.keys.token_key, fast_hashing=fast_hashing)
        self.authenticator = ApiAuthenticator(self.identities)
        self.policy_store = PolicyStore(store.engine)
        self.policies = PolicyCache(self.policy_store)
        self.risk = risk or KindAwareRiskScorer()
        self.audit_engine = self._audit_engine(store)
        # Operators are stored as per-subject pseudonyms, so an erasure request destroys a key and
        # never touches the tree (GDPR); the retention window blanks old bodies, keeping their hashes.
        self.pseudonymizer = Pseudonymizer(self.audit_engine)
        self.log = AuditLog(self.audit_engine, self.keys.audit_signer, origin=AUDIT_ORIGIN,
                            pseudonymizer=self.pseudonymizer)
        self.retention_s = retention_s
        self._last_prune = 0.0
        self.recorder = GroupCommitRecorder(self.log)
        self.checkpoint_interval_s = checkpoint_interval_s
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="audit-checkpoints", daemon=True)
        self._checkpointer.start()

    @staticmethod
    def _audit_engine(store: Store) -> Engine:
        if store.engine.dialect.name != "sqlite":
            return store.engine
        from modelplane.store.repository import make_engine

        # Its own pool so synchronous=FULL (fsync per audit batch) does not slow every store write.
        return make_sqlite_durable(make_engine(store.url))

    @property
    def verifier(self) -> NoteVerifier:
        return self.keys.audit_signer.verifier

    def gate(self, sink: PendingAudit, principal: Principal | None = None,
             error: AuthenticationFailed | None = None) -> SecurityGate:
        identities: Any = self.authenticator if principal is None and error is None else _Known(principal, error)
        return SecurityGate(identities, self.policies.get, self.risk, sink)

    def prune_now(self) -> int:
        """Apply the retention window; returns how many entry bodies were blanked."""
        self._last_prune = time.time()
        return self.log.prune(self._last_prune, self.retention_s)

    def checkpoint_now(self) -> str:
        return self.log.checkpoint(time.time())

    def _checkpoint_loop(self) -> None:
        signed = -1
        while not self._stop.wait(self.checkpoint_interval_s):
            try:
                if self.log.size != signed:
                    self.log.checkpoint(time.time())
                    signed = self.log.size
                if time.time() - self._last_prune > PRUNE_INTERVAL_S:
                    self.prune_now()
            except Exception:  # keep signing later; the next round retries
                log.exception("could not sign an audit checkpoint")

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self.recorder.close()
        try:
            self.checkpoint_now()
        except Exception:
            log.exception("could not sign the final audit checkpoint")
        if self.audit_engine is not self.store.engine:
            self.audit_engine.dispose()


_registry: weakref.WeakKeyDictionary[Store, ApiSecurity] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def security_for(store: Store, home: Path | None = None, *, fast_hashing: bool = False) -> ApiSecurity:
    """The one ``ApiSecurity`` of this store in this process (created on first use)."""
    with _registry_lock:
        found = _registry.get(store)
        if found is None:
            if home is None:
                from modelplane.settings import Settings

                home = Settings().home
            found = _registry[store] = ApiSecurity(store, home, fast_hashing=fast_hashing)
        return found


def release_security(store: Store) -> None:
    """Stop this store's security threads (tests; a server just exits)."""
    with _registry_lock:
        found = _registry.pop(store, None)
    if found is not None:
        found.close()


def bootstrap_admin(sec: ApiSecurity, now: float) -> str | None:
    """At first start: team ``platform``, service account ``admin`` and its admin API key, and the
    platform policy set as version 1. Returns the key (the only time it is ever seen), else None."""
    with sec.store.engine.connect() as conn:
        exists = conn.execute(select(identity_sql.service_accounts.c.name)
                              .where(identity_sql.service_accounts.c.name == ADMIN_NAME)).first()
    if exists is not None:
        return None
    with contextlib.suppress(Conflict):  # a team of that name may predate the admin
        sec.identities.create_team(ADMIN_TEAM, now)
    sec.identities.create_service_account(ADMIN_NAME, ADMIN_TEAM, now)
    key = sec.identities.issue_api_key(ADMIN_NAME, [ADMIN_SCOPE], now)
    if sec.policy_store.current_version() == 0:
        sec.policy_store.update(PLATFORM_POLICIES, author="bootstrap", now=now, expected_version=0)
        sec.policies.invalidate()
    sec.recorder.record(AuditEntry("bootstrap", "bootstrap.admin", f"Identity/{ADMIN_NAME}", now, "succeeded",
                                   "bootstrap", {"scopes": ADMIN_SCOPE}))
    return key


# --------------------------------------------------------------------------- route rules
@dataclass
class RuleContext:
    principal: Principal
    store: Store
    path: Mapping[str, str]
    query: Mapping[str, str]
    body: Any


Resolver = Callable[[RuleContext], dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    """How one route is authorized: the action, and how to find the resource's attributes."""

    action: str  # "read" | "write" | "public" (the handler's own credential check, e.g. login)
    resolve: Resolver | None = None
    needs_body: bool = False


def _fixed(rtype: str, rid: str = "*") -> Resolver:
    return lambda ctx: {"type": rtype, "id": rid}


def _named(rtype: str) -> Resolver:
    return lambda ctx: {"type": rtype, "id": ctx.path.get("name", "")}


def _job(ctx: RuleContext) -> dict[str, Any]:
    name = ctx.path["name"]
    try:
        team = ctx.store.get_job(name).team
    except NotFound:
        team = ""  # no one but an admin may learn that a name is free: members get 403, as for others' jobs
    return {"type": "Job", "id": name, "owner_team": team}


def _deployment(ctx: RuleContext) -> dict[str, Any]:
    name = ctx.path["name"]
    try:
        team = ctx.store.get_deployment(name).team
    except NotFound:
        team = ""  # as for jobs: only an admin learns that the name is free
    return {"type": "Job", "id": name, "owner_team": team}


def _job_manifest(ctx: RuleContext) -> dict[str, Any]:
    body = ctx.body if isinstance(ctx.body, dict) else {}
    raw = body.get("metadata")
    meta: dict[str, Any] = raw if isinstance(raw, dict) else {}
    team = meta.get("team", "default")  # the manifest's own default (core.spec)
    return {"type": "Job", "id": str(meta.get("name", "")), "owner_team": str(team)}


def _node_body(ctx: RuleContext) -> dict[str, Any]:
    body = ctx.body if isinstance(ctx.body, dict) else {}
    return {"type": "Node", "id": str(body.get("name", ""))}


def _team_listing(rtype: str) -> Resolver:
    """A list: the team asked for, else the caller's own (admins see everything)."""
    return lambda ctx: {"type": rtype, "id": "*", "owner_team": ctx.query.get("team") or ctx.principal.team}


team_listing = _team_listing  # for pages and routers that register their own rules (add_rules)


def _queue(ctx: RuleContext) -> dict[str, Any]:
    name = ctx.path["name"]
    try:
        team = ctx.store.get_queue(name).spec.team
    except NotFound:
        team = ""
    return {"type": "Queue", "id": name, "owner_team": team}


def _quota(ctx: RuleContext) -> dict[str, Any]:
    body = ctx.body if isinstance(ctx.body, dict) else {}
    return {"type": "Quota", "id": str(ctx.path.get("name") or body.get("name", ""))}


def _self_identity(ctx: RuleContext) -> dict[str, Any]:
    return {"type": "Identity", "id": ctx.principal.id, "owner_team": ctx.principal.team, "caller_is_subject": True}


def _identity(ctx: RuleContext) -> dict[str, Any]:
    body = ctx.body if isinstance(ctx.body, dict) else {}
    name = ctx.path.get("name") or body.get("name", "")
    return {"type": "Identity", "id": str(name), "caller_is_subject": False}


def _lineage_event(ctx: RuleContext) -> dict[str, Any]:
    """Recording an OpenLineage event writes in the name of its job: a platform job's owning team may;
    for a job the platform does not run, only an admin (or an API key scoped role:admin) may."""
    body = ctx.body if isinstance(ctx.body, dict) else {}
    job = body.get("job") if isinstance(body.get("job"), dict) else {}
    name = str(job.get("name", "")) if isinstance(job, dict) else ""
    try:
        team = ctx.store.get_job(name).team if name else ""
    except NotFound:
        team = ""
    return {"type": "Job", "id": name, "owner_team": team}


def _dataset(ctx: RuleContext) -> dict[str, Any]:
    """A sensitive dataset belongs to the team that protected it; a new one to the body's team or the caller's."""
    from modelplane.store.sensitive_catalog import get

    uri = ctx.path.get("uri", "")
    try:
        found = get(ctx.store, uri)
    except ModelplaneError:
        found = None  # a malformed URI: the handler names the problem
    body = ctx.body if isinstance(ctx.body, dict) else {}
    team = found.team if found else str(body.get("team") or ctx.principal.team)
    return {"type": "Dataset", "id": uri, "owner_team": team}


def _console_manifest(ctx: RuleContext) -> dict[str, Any]:
    """The console posts ``{"manifest": "<yaml>"}``: the same resource as the API's ``POST /jobs``."""
    import yaml

    body = ctx.body if isinstance(ctx.body, dict) else {}
    try:
        doc = yaml.safe_load(str(body.get("manifest", "")))
    except yaml.YAMLError:  # nothing can be written: let the handler name the YAML error
        return {"type": "Job", "id": "", "owner_team": ctx.principal.team}
    return _job_manifest(replace(ctx, body=doc))


V1 = "/api/v1"
CONSOLE = "/console"
PUBLIC = Rule("public")
RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/metrics"): Rule("read", _fixed("Node", "metrics")),
    ("GET", V1 + "/version"): Rule("read", _fixed("Node", "version")),
    # jobs: owner team = the job's metadata.team
    ("POST", V1 + "/jobs"): Rule("write", _job_manifest, needs_body=True),
    ("GET", V1 + "/jobs"): Rule("read", _team_listing("Job")),
    ("GET", V1 + "/jobs/{name}"): Rule("read", _job),
    ("GET", V1 + "/jobs/{name}/events"): Rule("read", _job),
    ("GET", V1 + "/jobs/{name}/logs"): Rule("read", _job),
    ("DELETE", V1 + "/jobs/{name}"): Rule("write", _job),
    # inference deployments: Job resources of the manifest's team; inference itself is a read
    # (it changes nothing, and is not written to the audit log request by request)
    ("POST", V1 + "/deployments"): Rule("write", _job_manifest, needs_body=True),
    ("GET", V1 + "/deployments"): Rule("read", _team_listing("Job")),
    ("GET", V1 + "/deployments/{name}"): Rule("read", _deployment),
    ("DELETE", V1 + "/deployments/{name}"): Rule("write", _deployment),
    ("POST", V1 + "/deployments/{name}/infer"): Rule("read", _deployment),
    # the model registry: platform infrastructure like the node pool (members read, admins write);
    # the policy set permits nothing on Model resources yet
    ("POST", V1 + "/models"): Rule("write", _fixed("Node", "model-registry")),
    ("GET", V1 + "/models"): Rule("read", _fixed("Node", "model-registry")),
    ("GET", V1 + "/models/{name}"): Rule("read", _fixed("Node", "model-registry")),
    ("POST", V1 + "/models/{name}/versions/{version}/stage"): Rule("write", _fixed("Node", "model-registry")),
    # nodes: members read the pool (for affinity); admins change it
    ("POST", V1 + "/nodes"): Rule("write", _node_body, needs_body=True),
    ("GET", V1 + "/nodes"): Rule("read", _fixed("Node")),
    ("GET", V1 + "/nodes/{name}"): Rule("read", _named("Node")),
    ("DELETE", V1 + "/nodes/{name}"): Rule("write", _named("Node")),
    ("PATCH", V1 + "/nodes/{name}/labels"): Rule("write", _named("Node")),  # node agents publish URLs
    **{("POST", V1 + f"/nodes/{{name}}/{verb}"): Rule("write", _named("Node"))
       for verb in ("heartbeat", "cordon", "uncordon", "drain")},
    # queues: reading is the owning team's; creating one or changing its quota is an admin's
    ("POST", V1 + "/queues"): Rule("write", _quota, needs_body=True),
    ("GET", V1 + "/queues"): Rule("read", _team_listing("Queue")),
    ("GET", V1 + "/queues/{name}"): Rule("read", _queue),
    ("DELETE", V1 + "/queues/{name}"): Rule("write", _quota),
    ("POST", V1 + "/cluster/import"): Rule("write", _fixed("Node", "cluster")),
    # cost of every team's work: the platform team's (admins manage quotas)
    ("GET", V1 + "/cost"): Rule("read", _fixed("Quota", "cost")),
    # lineage graph: cluster-wide metadata, read like the node pool; events written as their job
    ("POST", V1 + "/lineage/events"): Rule("write", _lineage_event, needs_body=True),
    ("GET", V1 + "/lineage/nodes"): Rule("read", _fixed("Node", "lineage")),
    **{("GET", V1 + f"/lineage/{{kind}}/{{name}}{p}"): Rule("read", _fixed("Node", "lineage"))
       for p in ("", "/upstream", "/downstream", "/impact")},
    # sensitive datasets (data/sensitive.py): the owning team's; key release checks the job's own
    # credential and audits itself; node attestations are node writes (admins, node agents)
    ("GET", V1 + "/datasets"): Rule("read", _team_listing("Dataset")),
    ("GET", V1 + "/datasets/{uri}"): Rule("read", _dataset),
    ("PUT", V1 + "/datasets/{uri}"): Rule("write", _dataset, needs_body=True),
    ("POST", V1 + "/datasets/key-release"): PUBLIC,
    ("POST", V1 + "/nodes/{name}/attestation"): Rule("write", _named("Node")),
    ("GET", V1 + "/nodes/{name}/attestation"): Rule("read", _named("Node")),
    # audit log
    **{("GET", V1 + f"/audit/{p}"): Rule("read", _fixed("AuditLog", p))
       for p in ("entries", "checkpoint", "proof/inclusion", "proof/consistency")},
    ("POST", V1 + "/audit/verify"): Rule("read", _fixed("AuditLog", "verify")),
    ("POST", V1 + "/audit/erase"): Rule("write", lambda c: {"type": "Identity", "id": "erasure"}),
    # identities and policies: admins
    ("POST", V1 + "/users"): Rule("write", _identity, needs_body=True),
    ("POST", V1 + "/teams"): Rule("write", lambda c: {"type": "Identity", "id": "team"}),
    ("POST", V1 + "/service-accounts"): Rule("write", _identity, needs_body=True),
    ("POST", V1 + "/service-accounts/{name}/api-keys"): Rule("write", _identity),
    ("GET", V1 + "/policies"): Rule("read", _fixed("Policy", "active")),
    ("PUT", V1 + "/policies"): Rule("write", _fixed("Policy", "active")),
    # self-service credentials (a user's own MFA and devices)
    ("POST", V1 + "/auth/mfa/enroll"): Rule("write", _self_identity),
    ("POST", V1 + "/auth/mfa/confirm"): Rule("write", _self_identity),
    ("POST", V1 + "/auth/devices"): Rule("write", _self_identity),
    ("POST", V1 + "/auth/devices/verify"): Rule("write", _self_identity),
    ("GET", V1 + "/auth/whoami"): Rule("read", _self_identity),
    # credential exchanges: the identity service checks the credential itself and they are audited
    ("POST", V1 + "/auth/login"): PUBLIC,
    ("POST", V1 + "/auth/refresh"): PUBLIC,
    ("POST", V1 + "/auth/logout"): PUBLIC,
    ("POST", V1 + "/auth/step-up"): PUBLIC,
    ("POST", V1 + "/auth/devices/challenge"): PUBLIC,
    # web console (api/console): each page authorized like the API data it shows
    ("GET", CONSOLE): Rule("read", _fixed("Node")),
    ("GET", CONSOLE + "/queues"): Rule("read", _team_listing("Queue")),
    ("GET", CONSOLE + "/jobs"): Rule("read", _team_listing("Job")),
    ("GET", CONSOLE + "/submit"): Rule("read", _team_listing("Job")),
    ("POST", CONSOLE + "/jobs"): Rule("write", _console_manifest, needs_body=True),
    **{("GET", CONSOLE + f"/jobs/{{name}}{p}"): Rule("read", _job) for p in ("", "/status", "/logs")},
    ("GET", CONSOLE + "/audit"): Rule("read", _fixed("AuditLog", "entries")),
    ("POST", CONSOLE + "/audit/verify"): Rule("read", _fixed("AuditLog", "verify")),
    ("GET", CONSOLE + "/lineage"): Rule("read", _fixed("Node", "lineage")),
}




def add_rules(rules: Mapping[tuple[str, str], Rule]) -> None:
    """For routers added with ``create_app(extra_routers=...)``: classify their routes here, or the
    guard refuses them to everyone."""
    RULES.update(rules)


@dataclass
class RequestSecurity:
    """What the guard learnt about one request, kept on ``request.state.security``."""

    sink: PendingAudit
    request_id: str
    gate_request: GateRequest | None = None
    admitted: Admitted | None = None
    operator: str = "anonymous"
    extra: dict[str, str] = field(default_factory=dict)


_CONVERTER = re.compile(r"\{(\w+):\w+\}")


def route_template(request: Request) -> str:
    """The matched route's full path template, e.g. ``/api/v1/jobs/{name}``.

    FastAPI mounts included routers, so ``route.path`` may lack the ``/api/v1`` prefix; converters
    (``{name:path}``) are dropped, as in the OpenAPI document, so RULES keys match its paths."""
    path = _CONVERTER.sub(r"{\1}", str(getattr(request.scope.get("route"), "path", "") or request.url.path))
    if not path.startswith(V1) and request.url.path.startswith(V1 + "/"):
        return V1 + path
    return path


def _state(request: Request) -> RequestSecurity:
    rs: RequestSecurity | None = getattr(request.state, "security", None)
    if rs is None:  # the middleware normally sets it up
        sec: ApiSecurity = request.app.state.security
        rs = RequestSecurity(PendingAudit(sec.recorder), uuid.uuid4().hex)
        request.state.security = rs
    return rs


async def guard(request: Request) -> Principal:
    """The one authorization point of the API (a router-level dependency)."""
    sec: ApiSecurity = request.app.state.security
    path = route_template(request)
    rule = RULES.get((request.method, path))
    rs = _state(request)
    now = time.time()
    operation = f"{request.method} {path}"
    if rule is None:  # a route nobody classified is closed to everyone (no policy permits this)
        rule = Rule("write", _fixed("AuditLog", "unclassified-route"))
    if rule.action == "public":
        raise ModelplaneError(f"{operation} is a public route and needs no guard", hint="a bug in RULES")
    body: Any = None
    if rule.needs_body:
        try:
            body = await request.json()
        except ValueError:
            body = None
    credential = bearer(request)
    ip = source_ip(request)

    def check() -> Principal:
        principal: Principal | None = None
        error: AuthenticationFailed | None = None
        if credential:
            try:
                principal = sec.authenticator.authenticate(credential, now)
            except AuthenticationFailed as exc:
                error = exc
        resource: dict[str, Any] = {"type": "Node", "id": "?"}
        if principal is not None and rule.resolve is not None:
            ctx = RuleContext(principal, sec.store, request.path_params, request.query_params, body)
            resource = rule.resolve(ctx)
        greq = GateRequest(credential, rule.action, resource, operation, ip, now, rs.request_id)
        rs.gate_request = greq
        admitted = sec.gate(rs.sink, principal, error).check(greq)
        rs.admitted = admitted
        rs.operator = admitted.principal.id
        return admitted.principal

    return await run_in_threadpool(check)


def team_scope(request: Request) -> str | None:
    """Team a listing is limited to: the caller's own, or None (everything) for admins."""
    admitted = _state(request).admitted
    if admitted is None:  # fail closed: a listing outside the guard sees nothing
        from modelplane.core.errors import Forbidden

        raise Forbidden("this listing was not authorized", hint="a bug: the route is missing the guard")
    return None if admitted.principal.role == "admin" else admitted.principal.team


def audit_public(request: Request, operator: str, outcome: str, resource: str,
                 details: Mapping[str, str] | None = None) -> None:
    """For credential exchanges (logout, refresh): one entry, waited for by the middleware."""
    rs = _state(request)
    op = f"{request.method} {route_template(request)}"
    rs.sink.record(AuditEntry(operator, op, resource, time.time(), outcome, rs.request_id, dict(details or {})))


def request_context(request: Request) -> tuple[ApiSecurity, RequestSecurity]:
    return request.app.state.security, _state(request)


async def audit_middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Outcome of every admitted write joins the log; the response waits until the entries are durable."""
    sec: ApiSecurity = request.app.state.security
    given = request.headers.get("x-request-id", "")
    rid = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    rs = RequestSecurity(PendingAudit(sec.recorder), rid)
    request.state.security = rs
    response = await call_next(request)
    admitted, greq = rs.admitted, rs.gate_request
    if admitted is not None and greq is not None and greq.action == "write":
        ok = response.status_code < 400
        details = {"status": str(response.status_code), **rs.extra}
        rs.sink.record(AuditEntry(admitted.principal.id, greq.operation,
                                  f"{greq.resource.get('type', '?')}/{greq.resource.get('id', '')}", time.time(),
                                  "succeeded" if ok else "failed", rs.request_id, details))
    futures = rs.sink.submit()
    if futures:
        try:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except Exception:
            log.exception("audit entries of request %s were not written", rs.request_id)
            from fastapi.responses import JSONResponse

            return JSONResponse(status_code=503, content={
                "error": "AuditUnavailable", "message": "the audit log could not record this request",
                "hint": "retry; if it persists, check the database and the server log"})
    response.headers["X-Request-Id"] = rs.request_id
    return response
