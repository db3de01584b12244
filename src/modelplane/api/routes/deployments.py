"""Inference deployments: create, read, list, delete, and the gateway that serves their requests.

The gateway (``serve.gateway.Gateway``) lives in the API process. It learns each deployment's
ready replica endpoints from the store, where the deployment controller writes them, and reports
its load (requests in flight and waiting, per-replica outstanding counts, requests per second) back
to the store for the autoscaler: API and controllers may be separate processes. Both directions are
refreshed about once a second; load is sampled every tenth of a second and averaged in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool

from modelplane.api.app import AppState, get_state
from modelplane.api.security import ApiSecurity, team_scope
from modelplane.core.errors import Conflict, InvalidSpec, ModelplaneError, NotFound
from modelplane.core.spec import InferenceDeployment, parse_manifest
from modelplane.obs.metrics import GATEWAY_REQUESTS
from modelplane.security.audit.entry import AuditEntry
from modelplane.serve.deployment import (
    MODEL_REF_ANNOTATION,
    REVISION_ANNOTATION,
    REVISION_HASH_ANNOTATION,
    gateway_config,
    is_file_ref,
    revision_hash,
    revision_of,
    user_doc,
    with_revision,
)
from modelplane.serve.errors import NoReplicaAvailable
from modelplane.serve.gateway import DeploymentConfig, Gateway
from modelplane.serve.guards.base import Action, DecisionCallback, GuardDecision
from modelplane.serve.replica import error_response
from modelplane.store import DeploymentRecord, Store

log = logging.getLogger("modelplane.api.deployments")

router = APIRouter(tags=["deployments"])
State = Annotated[AppState, Depends(get_state)]
MAX_NAME = 56  # replica jobs are named <deployment>-<k> and job names have at most 63 characters
SAMPLE_S = 0.1


def deployment_view(state: AppState, d: DeploymentRecord, detail: bool = False) -> dict[str, Any]:
    """The deployment as the API shows it: the manifest as applied (revision annotations aside),
    its revision, and the rollout in progress or stopped, if any."""
    out = d.to_dict()
    notes = (d.manifest_doc.get("metadata") or {}).get("annotations") or {}
    number = str(notes.get(REVISION_ANNOTATION, "1"))
    rollout = d.status.get("rollout") or None
    serving = d.status.get("revision") or {}
    out["revision"] = {"number": int(number) if number.isdigit() else 1, "hash": notes.get(REVISION_HASH_ANNOTATION, ""),
                       "model": notes.get(MODEL_REF_ANNOTATION, ""), "serving": serving.get("number"),
                       "rollout": None if rollout is None else {k: rollout.get(k) for k in (
                           "number", "phase", "message", "failures", "startedAt")}}
    # The replica templates in the status are the controller's; callers see the rest.
    out["status"] = {k: v for k, v in d.status.items() if k not in ("revision", "rollout")} | {
        "revision": {k: v for k, v in serving.items() if k != "template"} if serving else None,
        "rollout": None if rollout is None else {k: v for k, v in rollout.items() if k != "template"}}
    if detail:
        out["manifest"] = user_doc(d.manifest_doc)
    else:
        out.pop("manifest", None)
    return out


def _validate(doc: dict[str, Any]) -> InferenceDeployment:
    manifest = parse_manifest(doc)
    if not isinstance(manifest, InferenceDeployment):
        raise InvalidSpec(f"kind {manifest.kind!r} is not a deployment", hint="use kind: InferenceDeployment",
                          field="kind")
    if len(manifest.metadata.name) > MAX_NAME:
        raise InvalidSpec(f"metadata.name: a deployment name has at most {MAX_NAME} characters",
                          hint="shorten it: replicas are named <name>-<k>", field="metadata.name")
    auto = manifest.spec.autoscaling
    if auto is not None and auto.min_replicas > auto.max_replicas:
        raise InvalidSpec(f"spec.autoscaling: minReplicas ({auto.min_replicas}) > maxReplicas ({auto.max_replicas})",
                          hint="set minReplicas <= maxReplicas", field="spec.autoscaling")
    return manifest


@functools.lru_cache(maxsize=4)
def _registry(url: str) -> Any:
    from modelplane.serve.registry import ModelRegistry

    return ModelRegistry(url)


def pin_model(ref: str) -> str | None:
    """The version a registry reference names now (``digits@production`` -> ``digits:2``), pinned
    at apply time so that applying again after a promotion rolls the new version out. None for a
    file or URL (it stands for itself). Raises the registry's error when it does not resolve."""
    if is_file_ref(ref):
        return None
    from modelplane.settings import Settings

    mv = _registry(Settings().resolved_model_registry_url).resolve(ref)
    return str(mv.ref)


def create_deployment(state: AppState, doc: dict[str, Any]) -> dict[str, Any]:
    """Validate and store an InferenceDeployment. Applying it again unchanged is a no-op; with a
    changed spec it is an update (``configured``): a new revision (what replicas run changed, or a
    registry reference now names another version) rolls out replica by replica, anything else
    (replicas, autoscaling, guards, strategy) applies in place."""
    manifest = _validate(doc)
    name = manifest.metadata.name
    try:
        existing = state.store.get_deployment(name)
    except NotFound:
        existing = None
    if existing is not None:
        return _update_deployment(state, existing, doc, manifest)
    state.store.get_queue(manifest.spec.queue)  # a clear 404 naming the queue
    try:
        pinned = pin_model(manifest.spec.model)
    except (ModelplaneError, ValueError):
        pinned = None  # not registered yet: the controller resolves it later and says why it waits
    stored = with_revision(doc, 1, revision_hash(manifest, pinned), pinned)
    return deployment_view(state, state.store.create_deployment(stored))


def _update_deployment(state: AppState, existing: DeploymentRecord, doc: dict[str, Any],
                       manifest: InferenceDeployment) -> dict[str, Any]:
    name = manifest.metadata.name
    old_model = str((existing.manifest_doc.get("spec") or {}).get("model", ""))
    try:
        pinned = pin_model(manifest.spec.model)
    except (ModelplaneError, ValueError) as exc:
        if manifest.spec.model != old_model:
            message = getattr(exc, "message", str(exc))
            raise NotFound(f"spec.model: {message}", hint="register the model (modelplane models register) or "
                           "fix spec.model; nothing was changed", field="spec.model") from None
        pinned = revision_of(existing.manifest_doc).model if MODEL_REF_ANNOTATION in (
            (existing.manifest_doc.get("metadata") or {}).get("annotations") or {}) else None
    digest = revision_hash(manifest, pinned)
    for _ in range(10):  # the controller rewrites the status every round: retry a lost race
        if existing.deleting:
            raise Conflict(f"deployment {name!r} is being deleted", hint="wait for the deletion, then apply again",
                           field="metadata.name")
        for what, old, new in (("spec.queue", existing.queue, manifest.spec.queue),
                               ("metadata.team", existing.team, manifest.metadata.team)):
            if old != new:
                raise Conflict(f"{what} of deployment {name!r} cannot change ({old!r} -> {new!r})",
                               hint=f"delete the deployment and apply it again to move it, or keep {what} {old!r}",
                               field=what)
        current = revision_of(existing.manifest_doc)
        if user_doc(existing.manifest_doc) == user_doc(doc) and current.hash == digest:
            return deployment_view(state, existing) | {"unchanged": True}
        number = current.number + 1 if current.hash != digest else current.number
        try:
            updated = state.store.update_deployment(name, manifest=with_revision(doc, number, digest, pinned),
                                                    expected_version=existing.resource_version)
        except Conflict:
            existing = state.store.get_deployment(name)
            continue
        serving = (existing.status.get("revision") or {}).get("hash", current.hash)
        # A rollout when replicas must change: a spec equal to the serving one (a rollback after a
        # failed rollout) is taken in place.
        return deployment_view(state, updated) | {"configured": True, "rollout": serving != digest}
    raise Conflict(f"deployment {name!r} kept changing while it was applied", hint="apply it again")


@router.post("/deployments", status_code=201)
def apply_deployment(
    state: State, response: Response,
    doc: Annotated[dict[str, Any], Body(description="an InferenceDeployment manifest")],
) -> dict[str, Any]:
    """Create a deployment, or update it (``POST /jobs`` with kind InferenceDeployment does the same):
    201 created, 200 unchanged or configured (a changed spec; ``rollout`` says whether replicas are
    replaced)."""
    out = create_deployment(state, doc)
    if out.get("unchanged") or out.get("configured"):
        response.status_code = 200
    return out


@router.get("/deployments")
def list_deployments(state: State, team: str | None = None,
                     visible_team: Annotated[str | None, Depends(team_scope)] = None) -> dict[str, Any]:
    """Deployments of the caller's team (admins: every team's)."""
    return {"items": [deployment_view(state, d) for d in state.store.list_deployments(team=team or visible_team)]}


@router.get("/deployments/{name}")
def get_deployment(name: str, state: State) -> dict[str, Any]:
    return deployment_view(state, state.store.get_deployment(name), detail=True)


@router.delete("/deployments/{name}")
def delete_deployment(name: str, state: State) -> dict[str, Any]:
    """Delete a deployment: it leaves the gateway at once; its replicas drain, stop, and then it is gone."""
    for _ in range(5):  # the controller rewrites the status every round: retry a lost race
        d = state.store.get_deployment(name)
        if d.deleting:
            break
        try:
            d = state.store.update_deployment(name, deleting=True, expected_version=d.resource_version)
            break
        except Conflict:
            continue
    return deployment_view(state, d)


@router.post("/deployments/{name}/infer")
async def infer(name: str, request: Request) -> Response:
    """KServe-v2 style: ``{"inputs": rows}`` in, ``{"outputs": rows}`` out, through the gateway.

    400 names the expected shape and dtype; 429 carries Retry-After when the deployment's queue is
    full; 503 when no replica is ready."""
    serving: DeploymentGateway = request.app.state.deployment_gateway
    await serving.ensure(name)
    try:
        answer = await serving.infer(name, await request.body(), request.headers.get("x-request-id", ""))
    except ModelplaneError as exc:
        GATEWAY_REQUESTS.labels(name, str(exc.status_code)).inc()
        return error_response(exc)
    GATEWAY_REQUESTS.labels(name, "200").inc()
    serving.count(name)
    return Response(answer, media_type="application/json")


HISTORY_POINTS = 3600  # an hour at one refresh a second, per deployment, in this process only


@dataclass(frozen=True)
class LoadPoint:
    """What the gateway saw of one deployment at one refresh (the console draws these over time)."""

    t: float
    ready: int
    desired: int
    in_flight: float
    waiting: float
    rps: float
    latency_ms: float


@dataclass
class _Load:
    samples: int = 0
    in_flight: float = 0.0
    waiting: float = 0.0
    served: int = 0


@dataclass
class DeploymentGateway:
    """The API process's gateway and its exchange with the store."""

    store: Store
    max_in_flight: int = 64
    max_waiting: int = 256
    refresh_s: float = 1.0
    cold_start_timeout_s: float = 60.0
    retry_window_s: float = 10.0
    gateway: Gateway = field(default_factory=Gateway)
    _load: dict[str, _Load] = field(default_factory=dict)
    _held: dict[str, int] = field(default_factory=dict)
    _last_refresh: float = float("-inf")
    _lock: asyncio.Lock | None = None
    _task: asyncio.Task[None] | None = None
    audit: ApiSecurity | None = None  # where guard decisions are recorded
    history: dict[str, deque[LoadPoint]] = field(default_factory=dict)
    _guards: dict[str, str] = field(default_factory=dict)  # each deployment's spec.guards, as configured

    def count(self, name: str) -> None:
        self._load.setdefault(name, _Load()).served += 1

    async def infer(self, name: str, raw: bytes, request_id: str = "") -> bytes:
        """Through the gateway; when every replica it knows failed (one was killed, and the one that
        replaces it is not in the list yet), wait for the next replica list and try again, for up to
        ``retry_window_s``: the gateway retries only on answers that executed nothing or failed."""
        deadline = time.monotonic() + self.retry_window_s
        while True:
            await self.activate(name)
            try:
                return await self.gateway.infer_bytes(name, raw, request_id=request_id)
            except NoReplicaAvailable:
                if time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(SAMPLE_S * 2)
            if time.monotonic() - self._last_refresh > self.refresh_s / 2:
                await self.refresh()

    async def activate(self, name: str) -> None:
        """Hold a request while its deployment has no replica (scaled to zero, or still starting),
        counted as waiting so the autoscaler starts one; 503 after ``cold_start_timeout_s``."""
        if self.gateway.outstanding(name):
            return
        self._held[name] = self._held.get(name, 0) + 1
        try:
            deadline = time.monotonic() + self.cold_start_timeout_s
            while not self.gateway.outstanding(name):
                if time.monotonic() >= deadline:
                    raise NoReplicaAvailable(
                        f"deployment {name!r} has no ready replica after {self.cold_start_timeout_s:g} s",
                        hint=f"see why with 'modelplane describe deployment {name}'")
                await asyncio.sleep(SAMPLE_S)
                if time.monotonic() - self._last_refresh > self.refresh_s:
                    await self.refresh()
        finally:
            self._held[name] -= 1

    def _sample(self) -> None:
        for name in self.gateway.deployments():
            in_flight, waiting = self.gateway.load(name)
            waiting += self._held.get(name, 0)
            acc = self._load.setdefault(name, _Load())
            acc.samples += 1
            acc.in_flight += in_flight
            acc.waiting += waiting

    async def ensure(self, name: str) -> None:
        """Refresh now if the gateway does not know ``name`` yet (a deployment just created) or the
        background refresh is not running."""
        if name not in self.gateway.deployments() or time.monotonic() - self._last_refresh > 3 * self.refresh_s:
            await self.refresh()
        if name not in self.gateway.deployments():
            raise NotFound(f"deployment {name!r} does not exist",
                           hint="list deployments with 'modelplane get deployments'")

    async def refresh(self) -> None:
        """Read every deployment's ready endpoints; write the load averaged since the last refresh."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            now = time.monotonic()
            elapsed = now - self._last_refresh
            self._last_refresh = now
            rows = await run_in_threadpool(self.store.list_deployments)
            reports: list[tuple[str, dict[str, Any]]] = []
            known = set(self.gateway.deployments())
            for d in rows:
                guards = json.dumps((d.manifest_doc.get("spec") or {}).get("guards"), sort_keys=True)
                if d.name not in known:
                    self.gateway.add_deployment(await run_in_threadpool(self._config, d))
                elif self._guards.get(d.name) != guards:  # an apply changed them: swap them in place
                    self.gateway.update_config(await run_in_threadpool(self._config, d))
                self._guards[d.name] = guards
                self.gateway.set_replicas(d.name, [] if d.deleting else list(d.status.get("endpoints", [])))
                acc = self._load.pop(d.name, _Load())
                in_flight, waiting = self.gateway.load(d.name)
                waiting += self._held.get(d.name, 0)
                n = acc.samples
                reports.append((d.name, {
                    "inFlight": acc.in_flight / n if n else float(in_flight),
                    "waiting": acc.waiting / n if n else float(waiting),
                    "outstanding": self.gateway.outstanding(d.name),
                    "rps": acc.served / elapsed if 0 < elapsed < 60 else 0.0,
                }))
                self.history.setdefault(d.name, deque(maxlen=HISTORY_POINTS)).append(LoadPoint(
                    time.time(), len(self.gateway.outstanding(d.name)), d.desired,
                    reports[-1][1]["inFlight"], reports[-1][1]["waiting"], reports[-1][1]["rps"],
                    self.gateway.latency_s(d.name) * 1e3))
            for gone in known - {d.name for d in rows}:
                self.gateway.remove_deployment(gone)
                self._guards.pop(gone, None)
                self._load.pop(gone, None)
                self.history.pop(gone, None)
            if reports:
                await run_in_threadpool(self._report, reports)

    def _config(self, d: DeploymentRecord) -> DeploymentConfig:
        """The deployment's gateway settings and guards; guard decisions that change a request (a
        block, a redaction, a flag) go to the audit log, every decision to the metrics."""
        manifest = d.manifest
        assert isinstance(manifest, InferenceDeployment)
        callbacks: list[DecisionCallback] = [] if self.audit is None else [self._audit_decision]
        return gateway_config(manifest, max_in_flight=self.max_in_flight, max_waiting=self.max_waiting,
                              callbacks=callbacks)

    def _audit_decision(self, decision: GuardDecision, ctx: dict[str, str]) -> None:
        if decision.action is Action.ALLOW or self.audit is None:
            return
        self.audit.recorder.submit(AuditEntry(
            operator="gateway", operation=f"guard.{decision.stage}.{decision.action.value}",
            resource=f"Deployment/{ctx.get('deployment', '')}", timestamp=time.time(),
            outcome="denied" if decision.action is Action.BLOCK else "allowed",
            request_id=ctx.get("request_id", ""),
            details={"guard": decision.guard, "reasons": ",".join(decision.reasons),
                     "score": f"{decision.score:.3f}"}))

    def _report(self, reports: list[tuple[str, dict[str, Any]]]) -> None:
        for name, load in reports:
            self.store.report_deployment_load(name, load)

    async def _run(self) -> None:
        next_refresh = 0.0
        while True:
            try:
                self._sample()
                if time.monotonic() >= next_refresh:
                    next_refresh = time.monotonic() + self.refresh_s
                    await self.refresh()
            except Exception:  # a database hiccup must not end the loop; the next round retries
                log.exception("gateway refresh failed")
            await asyncio.sleep(SAMPLE_S)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.gateway.aclose()


def install_gateway(app: FastAPI, store: Store) -> DeploymentGateway:
    """Put a gateway in the app, refreshed in the background while the server runs."""
    from modelplane.settings import Settings

    settings = Settings()
    serving = DeploymentGateway(store, settings.gateway_max_in_flight, settings.gateway_max_waiting,
                                audit=getattr(app.state, "security", None))
    app.state.deployment_gateway = serving
    app.router.on_startup.append(serving.start)
    app.router.on_shutdown.append(serving.stop)
    return serving
