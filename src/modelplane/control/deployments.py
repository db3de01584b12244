"""The deployment controller: keeps each InferenceDeployment at the replica count its autoscaler asks for.

A deployment is a parent object (store table ``deployments``); each replica is a single-task child
job (kind InferenceDeployment, ``replicas: 1``, named ``<deployment>-<k>``, labelled with the
deployment), so the scheduler places, preempts and accounts replicas one by one: 3 of 4 placed is
a deployment serving at 3.

Every tick, per deployment: materialize the model once (registry reference or file), read the
replicas' jobs and probe their endpoints, read the gateway's latest load sample (the API process
writes it to the store about once a second), feed the pure policy of ``autoscale.replica``, then
create replica jobs, or take the least busy replicas out of the gateway's list and stop them a
``drain_delay_s`` later (SIGTERM: the replica turns unready and finishes what it received). The
status it writes (ready endpoints, decisions) is what the gateway routes to.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from modelplane.autoscale.replica import (
    Bounds,
    Decision,
    HpaPolicy,
    KpaPolicy,
    Observation,
    QueueAwarePolicy,
    ReplicaPolicy,
    pick_scale_down,
)
from modelplane.control.base import Controller
from modelplane.core.errors import Conflict, InvalidSpec, InvalidTransition, ModelplaneError, NotFound
from modelplane.core.job import TERMINAL, JobState
from modelplane.core.priority import compute_priority
from modelplane.core.spec import AutoscalingSpec, InferenceDeployment, parse_manifest, to_workload
from modelplane.obs.metrics import SCALING_DECISIONS
from modelplane.store import DeploymentRecord, JobRecord, Store

log = logging.getLogger("modelplane.control.deployments")

DEPLOYMENT_LABEL = "modelplane.io/deployment"
INDEX_ANNOTATION = "modelplane.io/replica-index"
HISTORY = 30  # events kept in a deployment's status
MAX_BACKOFF_S = 300.0  # a replica that keeps failing is replaced at most this rarely


def replica_jobs_by_deployment(jobs: list[JobRecord]) -> dict[str, list[JobRecord]]:
    out: dict[str, list[JobRecord]] = {}
    for j in jobs:
        parent = ((j.manifest_doc.get("metadata") or {}).get("labels") or {}).get(DEPLOYMENT_LABEL)
        if parent:
            out.setdefault(parent, []).append(j)
    return out


def make_policy(spec: AutoscalingSpec, kind: str, *, stable_s: float, panic_s: float, downscale_delay_s: float,
                scale_to_zero_grace_s: float) -> ReplicaPolicy:
    """The policy for one deployment: bounds and target from the manifest, windows from the settings."""
    if spec.min_replicas > spec.max_replicas:
        raise InvalidSpec(f"autoscaling.minReplicas ({spec.min_replicas}) > maxReplicas ({spec.max_replicas})",
                          hint="set minReplicas <= maxReplicas", field="spec.autoscaling")
    bounds = Bounds(spec.min_replicas, spec.max_replicas)
    windows = dict(stable_s=stable_s, panic_s=panic_s, scale_to_zero_grace_s=scale_to_zero_grace_s)
    if kind == "ours":
        return QueueAwarePolicy(spec.target_concurrency, bounds, downscale_delay_s=downscale_delay_s,
                                utilization=0.6, **windows)
    if kind == "kpa":
        return KpaPolicy(spec.target_concurrency, bounds, **windows)
    if kind == "hpa":
        return HpaPolicy(0.7 * spec.target_concurrency, bounds, sync_s=min(15.0, stable_s),
                         downscale_stabilization_s=downscale_delay_s)
    raise InvalidSpec(f"unknown autoscaler {kind!r}", hint="set MODELPLANE_AUTOSCALER to ours, kpa or hpa",
                      field="autoscaler")


def _without_time(status: dict[str, Any]) -> dict[str, Any]:
    """A status minus the decision's timestamp: nothing else changed, nothing to write."""
    return {k: v for k, v in status.items() if k != "lastDecision"} | {
        "lastDecision": {k: v for k, v in (status.get("lastDecision") or {}).items() if k != "time"}}


class DeploymentController(Controller):
    name = "deployments"

    def __init__(self, store: Store, clock: Callable[[], float], *, cache_dir: Path, registry_url: str = "",
                 autoscaler: str = "ours", stable_s: float = 30.0, panic_s: float = 6.0,
                 downscale_delay_s: float = 300.0, scale_to_zero_grace_s: float = 30.0,
                 drain_delay_s: float = 2.0, load_stale_s: float = 5.0, probe_timeout_s: float = 0.5,
                 lineage: Any = None) -> None:
        """``load_stale_s``: a gateway sample older than this counts as no load (no API process is
        sending requests)."""
        self.store = store
        self.clock = clock
        self.cache_dir = cache_dir
        self.registry_url = registry_url
        self.autoscaler = autoscaler
        self.windows = dict(stable_s=stable_s, panic_s=panic_s, downscale_delay_s=downscale_delay_s,
                            scale_to_zero_grace_s=scale_to_zero_grace_s)
        self.drain_delay_s = drain_delay_s
        self.load_stale_s = load_stale_s
        self._http = httpx.Client(timeout=probe_timeout_s)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not one INFO line per readiness probe
        self._policies: dict[str, tuple[Any, ReplicaPolicy]] = {}
        self._registry: Any = None
        self._lineage = lineage  # a data.lineage.LineageStore: model -> deployment edges

    # -- the loop ---------------------------------------------------------------------------------

    def reconcile(self) -> None:
        deployments = self.store.list_deployments()
        jobs, _ = self.store.list_jobs(kind="InferenceDeployment", limit=1_000_000)
        children = replica_jobs_by_deployment(jobs)
        for d in deployments:
            try:
                self._reconcile_one(d, children.get(d.name, []))
            except (Conflict, InvalidTransition) as exc:
                log.info("deployment %s changed under us (%s); next round", d.name, exc.message)
            except ModelplaneError as exc:  # one deployment's trouble (its queue deleted) never stops the others
                log.warning("deployment %s: %s (%s); next round", d.name, exc.message, exc.hint)
        names = {d.name for d in deployments}
        for parent, kids in children.items():
            if parent not in names:  # the deployment row is gone (deleted): stop and forget its replicas
                self._stop_all(kids)
        for gone in set(self._policies) - names:
            self._policies.pop(gone, None)

    def _stop_all(self, kids: list[JobRecord]) -> int:
        """Cancel live replicas, purge finished ones; returns how many are still live."""
        live = 0
        for k in kids:
            if k.state in TERMINAL:
                self.store.delete_job(k.id)
                continue
            live += 1
            if not k.cancel_requested:
                self.store.update_job_fields(k.id, cancel_requested=True)
                self.store.add_event(k.id, "CancelRequested", "its deployment is being deleted")
        return live

    # -- one deployment ---------------------------------------------------------------------------

    def _reconcile_one(self, d: DeploymentRecord, kids: list[JobRecord]) -> None:
        now = self.clock()
        status = copy.deepcopy(d.status)
        events: list[dict[str, Any]] = list(status.get("events", []))

        def event(reason: str, message: str, **extra: Any) -> None:
            events.append({"time": now, "reason": reason, "message": message, **extra})

        if d.deleting:
            if self._stop_all(kids) == 0:
                self.store.delete_deployment(d.name)
                log.info("deployment %s deleted; its replicas have stopped", d.name)
                return
            status.update(phase="Deleting", endpoints=[])
            self.store.update_deployment(d.name, expected_version=d.resource_version, status=status)
            return
        manifest = d.manifest
        assert isinstance(manifest, InferenceDeployment)
        # Replicas that ended are purged: a failed one is replaced by a new job below.
        live: list[JobRecord] = []
        failures = int(status.get("failures", 0))
        for k in kids:
            if k.state in TERMINAL:
                if k.state is JobState.FAILED:
                    failures += 1
                    backoff = min(2.0 ** (failures - 1), MAX_BACKOFF_S)
                    status["retryAt"] = now + backoff
                    event("ReplicaFailed", f"replica {k.name} failed: {k.message}; replaced in {backoff:g} s")
                self.store.delete_job(k.id)
            else:
                live.append(k)
        status["failures"] = failures
        model_path = self._model(d, manifest, status, event)
        if model_path is None:
            status.update(phase="Failed", events=events[-HISTORY:])
            self.store.update_deployment(d.name, expected_version=d.resource_version, status=status)
            return
        draining: dict[str, float] = {n: t for n, t in dict(status.get("draining", {})).items()
                                      if any(k.name == n for k in live)}
        before = {r["name"]: bool(r.get("ready")) for r in status.get("replicas", [])}
        replicas = [self._observe(k, draining, before.get(k.name, False)) for k in live]
        serving = [r for r in replicas if not r["draining"]]
        ready = [r for r in serving if r["ready"]]
        fresh = d.load_at is not None and now - d.load_at <= self.load_stale_s
        load = d.load if fresh else {}
        in_flight, waiting = float(load.get("inFlight", 0.0)), float(load.get("waiting", 0.0))
        decision = self._decide(d, manifest, Observation(now, len(ready), len(serving) - len(ready), in_flight,
                                                         waiting))
        desired = decision.desired
        if desired != d.desired:
            direction = "up" if desired > d.desired else "down"
            SCALING_DECISIONS.labels(d.name, direction).inc()
            event("ScaledUp" if direction == "up" else "ScaledDown",
                  f"{d.desired} -> {desired} replicas ({decision.reason}; in flight {in_flight:g}, "
                  f"waiting {waiting:g}, ready {len(ready)})", desired=desired, panic=decision.panic)
        if ready:
            status["failures"] = 0  # a replica serves: the next failure is replaced at once
        if desired > len(serving) and now >= float(status.get("retryAt", 0.0)):
            taken = {k.name for k in kids}
            for _ in range(desired - len(serving)):
                name = self._create_replica(d, manifest, model_path, taken)
                taken.add(name)
        elif desired < len(serving):
            # Replicas without traffic first (not placed, still booting): stopping them costs nothing.
            idle = [r for r in serving if not r["ready"]]
            drop = idle[: len(serving) - desired]
            rest = len(serving) - desired - len(drop)
            if rest > 0:
                by_url = {r["endpoint"]: r["name"] for r in ready}
                outstanding = {by_url[u]: int(n) for u, n in dict(load.get("outstanding", {})).items() if u in by_url}
                busy = {r["name"]: outstanding.get(r["name"], 0) for r in ready}
                chosen = set(pick_scale_down(busy, rest))
                drop += [r for r in ready if r["name"] in chosen]
            for r in drop:
                if r["ready"]:
                    draining[r["name"]] = now  # out of the gateway's list now, stopped after the delay
                    event("Draining", f"replica {r['name']} leaves the gateway; stopping in {self.drain_delay_s:g} s")
                    r["draining"], r["ready"] = True, False
                else:
                    self._cancel(r["job"], "scaled down before it served")
        for r in replicas:
            if r["draining"] and now - draining.get(r["name"], now) >= self.drain_delay_s:
                self._cancel(r["job"], "scaled down; draining in-flight requests")
        ready = [r for r in replicas if r["ready"]]
        n_ready = len(ready)
        status.update(
            phase="Ready" if n_ready >= desired and desired > 0 else ("ScaledToZero" if desired == 0 else "Progressing"),
            ready=n_ready, desired=desired, endpoints=sorted(r["endpoint"] for r in ready),
            replicas=[{k: v for k, v in r.items() if k != "job"} for r in replicas],
            draining=draining, observed={"inFlight": in_flight, "waiting": waiting,
                                         "rps": float(load.get("rps", 0.0)), "fresh": fresh},
            lastDecision={"time": now, "desired": desired, "reason": decision.reason, "panic": decision.panic},
            events=events[-HISTORY:], error="",
        )
        if desired != d.desired or _without_time(status) != _without_time(d.status):
            self.store.update_deployment(d.name, expected_version=d.resource_version, desired=desired, status=status)

    def _model(self, d: DeploymentRecord, manifest: InferenceDeployment, status: dict[str, Any],
               event: Callable[..., None]) -> str | None:
        """The local ONNX file the replicas load (resolved once per deployment), or None after an error."""
        path = status.get("modelPath")
        if path and Path(path).exists() and status.get("modelSource") == manifest.spec.model:
            return str(path)
        from modelplane.serve.deployment import materialize_ref

        try:
            ref, local = materialize_ref(manifest.spec.model, self._registry_for(manifest.spec.model), self.cache_dir)
        except (ModelplaneError, ValueError) as exc:
            message = getattr(exc, "message", str(exc))
            if status.get("error") != message:
                event("ModelUnavailable", message)
            status["error"] = message
            return None
        status.update(modelSource=manifest.spec.model, modelRef=ref, modelPath=str(local.resolve()))
        event("ModelResolved", f"{manifest.spec.model} -> {ref}")
        self._record_lineage(d, ref)
        return str(local.resolve())

    def _record_lineage(self, d: DeploymentRecord, ref: str) -> None:
        """model version -> deployment in the lineage graph, so "which deployments serve a model
        trained on source X" is one impact query. A lineage store that is down costs the edge, not
        the deployment: it is logged and the deployment goes on."""
        if self._lineage is None:
            return
        try:
            from modelplane.data.lineage_hooks import DEFAULT_NAMESPACE

            model = self._lineage.upsert_node("model", ref, DEFAULT_NAMESPACE)
            dep = self._lineage.upsert_node("deployment", d.name, DEFAULT_NAMESPACE, {"team": d.team})
            self._lineage.add_edge(model, dep, "served_by")
        except Exception:
            log.exception("could not record the lineage of deployment %s", d.name)

    def _registry_for(self, ref: str) -> Any:
        from modelplane.serve.deployment import is_file_ref
        from modelplane.serve.registry import ModelRegistry

        if is_file_ref(ref) or not self.registry_url:
            return None
        if self._registry is None:
            self._registry = ModelRegistry(self.registry_url)
        return self._registry

    def _observe(self, job: JobRecord, draining: dict[str, float], was_ready: bool) -> dict[str, Any]:
        tasks = self.store.list_tasks(job.id)
        endpoint = tasks[0].endpoint if tasks else ""
        is_draining = job.name in draining or job.cancel_requested
        ready = False
        if job.state is JobState.RUNNING and endpoint and not is_draining:
            probed = self._probe(endpoint)
            ready = was_ready if probed is None else probed
        return {"name": job.name, "job": job, "state": job.state.value, "node": tasks[0].node if tasks else "",
                "endpoint": endpoint, "ready": ready, "draining": is_draining}

    def _probe(self, endpoint: str) -> bool | None:
        """Ready (200), not ready (503 or refused), or None when it did not answer in time: a busy
        replica on a loaded host is not dropped from the gateway for one slow probe."""
        try:
            return self._http.get(f"{endpoint}/v2/health/ready").status_code == 200
        except httpx.TimeoutException:
            return None
        except httpx.HTTPError:
            return False

    def _decide(self, d: DeploymentRecord, manifest: InferenceDeployment, obs: Observation) -> Decision:
        spec = manifest.spec.autoscaling
        if spec is None:
            return Decision(manifest.spec.replicas, "fixed replicas (no autoscaling)")
        key = (spec.model_dump_json(), self.autoscaler)
        cached = self._policies.get(d.name)
        if cached is None or cached[0] != key:  # first sight, or the autoscaling block changed
            cached = (key, make_policy(spec, self.autoscaler, **self.windows))
            self._policies[d.name] = cached
        return cached[1].decide(obs)

    def _create_replica(self, d: DeploymentRecord, manifest: InferenceDeployment, model_path: str,
                        taken: set[str]) -> str:
        from modelplane.serve.deployment import replica_task_command

        k = 0
        while f"{d.name}-{k}" in taken:
            k += 1
        name = f"{d.name}-{k}"
        doc = copy.deepcopy(d.manifest_doc)
        meta = doc.setdefault("metadata", {})
        meta["name"] = name
        meta.setdefault("labels", {})[DEPLOYMENT_LABEL] = d.name
        meta.setdefault("annotations", {})[INDEX_ANNOTATION] = str(k)
        spec = doc["spec"]
        spec["replicas"] = 1
        spec.pop("autoscaling", None)
        spec["template"]["command"] = replica_task_command(manifest, model_path)
        queue = self.store.get_queue(d.queue)
        w = to_workload(parse_manifest(doc), "check", 0.0)
        priority = compute_priority("InferenceDeployment", w.total_gpu_milli, manifest.spec.estimated_duration,
                                    w.deadline,
                                    self.clock(), queue_priority=queue.spec.priority,
                                    explicit=manifest.spec.priority)
        try:
            self.store.create_job(doc, priority=priority)
        except Conflict:
            taken.add(name)  # a job of that name exists outside this deployment: use the next index
            return self._create_replica(d, manifest, model_path, taken)
        return name

    def _cancel(self, job: JobRecord, why: str) -> None:
        if job.cancel_requested:
            return
        try:
            self.store.update_job_fields(job.id, cancel_requested=True)
            self.store.add_event(job.id, "CancelRequested", why)
        except NotFound:
            pass
