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

Rolling updates: each replica job carries the revision hash of the manifest it was made from
(``serve.deployment`` computes it; ``modelplane apply`` of a changed spec stores a new one). When
the manifest's hash differs from the serving revision's, a rollout starts: replicas of the new
revision are created up to ``maxSurge`` above the desired count, and old ones are drained only
while ``desired - maxUnavailable`` replicas stay ready (``plan_rollout``, Kubernetes' arithmetic),
so the gateway, which routes to ready replicas only, always has somewhere to send a request. New
replicas that keep failing (``rollout_max_failures``), a model that cannot be loaded, or no
completion within ``progressDeadlineSeconds`` stop the rollout: its replicas are drained, the old
revision keeps serving (and scaling, from the replica template kept in the status), and an event
says why. Applying the serving spec again cancels a rollout.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
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
REVISION_HASH_ANNOTATION = "modelplane.io/revision-hash"  # as serve.deployment (not imported: heavy)
REVISION_ANNOTATION = "modelplane.io/revision"
HISTORY = 30  # events kept in a deployment's status
MAX_BACKOFF_S = 300.0  # a replica that keeps failing is replaced at most this rarely
ROLLOUT_MAX_FAILURES = 3  # replicas of a new revision that may fail before its rollout stops
_REVISION_KEYS = ("number", "hash", "model", "modelRef", "modelPath", "template")


def _revision_hash(job: JobRecord) -> str:
    """The revision a replica job was made from ('' for one made before revisions existed)."""
    return str(((job.manifest_doc.get("metadata") or {}).get("annotations") or {}).get(REVISION_HASH_ANNOTATION, ""))


@dataclass(frozen=True)
class RolloutStep:
    """What one reconcile round does to a deployment's replicas: new ones to create, old ones to stop."""

    create: int
    drop_unready_old: int
    drop_ready_old: int


def plan_rollout(desired: int, surge: int, unavailable: int, new_total: int, new_ready: int, old_total: int,
                 old_ready: int) -> RolloutStep:
    """One step of a rolling update, as Kubernetes' RollingUpdate computes it. "new" replicas run the
    revision being rolled out, "old" ones anything else; draining replicas are counted in neither.

    New replicas are created while the total stays within ``desired + surge``; old ones are stopped
    only while at least ``desired - unavailable`` replicas stay ready: first the old ones that are
    not ready (they serve nothing), then ready ones. With no old replica this is plain scaling up.
    """
    total = new_total + old_total
    create = max(0, min(desired - new_total, desired + surge - total))
    min_available = max(0, desired - unavailable)
    new_unavailable = new_total - new_ready
    unready_old = old_total - old_ready
    drop_unready = max(0, min(unready_old, total - min_available - new_unavailable))
    drop_ready = max(0, min(old_ready, new_ready + old_ready - min_available))
    return RolloutStep(create, drop_unready, drop_ready)


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
                 lineage: Any = None, rollout_max_failures: int = ROLLOUT_MAX_FAILURES) -> None:
        """``load_stale_s``: a gateway sample older than this counts as no load (no API process is
        sending requests). ``rollout_max_failures``: replicas of a new revision that may fail before
        its rollout stops (a model that does not load fails every one)."""
        self.rollout_max_failures = rollout_max_failures
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
        from modelplane.serve.deployment import revision_of

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
        target = revision_of(d.manifest_doc)
        serving: dict[str, Any] | None = status.get("revision")
        rollout: dict[str, Any] | None = status.get("rollout")
        if serving is not None and serving["hash"] == target.hash:
            if rollout is not None:  # the serving spec applied again: a rollback, nothing restarts
                stopped = "stops and its replicas drain" if rollout["phase"] == "Progressing" else "stays stopped"
                event("RolledBack", f"revision {target.number} runs what revision {serving['number']} runs; the "
                                    f"rollout of revision {rollout['number']} {stopped}")
            rollout = None
            serving["number"] = target.number
        elif serving is not None and (rollout is None or rollout["hash"] != target.hash):
            if rollout is not None and rollout["phase"] == "Progressing":
                event("RolloutSuperseded", f"revision {target.number} replaces revision {rollout['number']} "
                                           "before its rollout finished")
            change = (f"model {serving.get('modelRef') or serving.get('model')} -> {target.model}"
                      if target.model not in (serving.get("model"), serving.get("modelRef")) else "template changed")
            rollout = {"number": target.number, "hash": target.hash, "model": target.model, "phase": "Progressing",
                       "startedAt": now, "failures": 0, "retryAt": 0.0, "message": ""}
            event("RolloutStarted", f"revision {serving['number']} -> {target.number} ({change}); new replicas "
                                    "must be ready before old ones drain")
        rolling = rollout is not None and rollout["phase"] == "Progressing"
        serving_hash = serving["hash"] if serving is not None else target.hash

        def fail_rollout(why: str) -> None:
            nonlocal rolling
            assert rollout is not None and serving is not None
            rollout.update(phase="Failed", message=why, endedAt=now)
            rollout.pop("template", None)
            event("RolloutFailed", f"rollout of revision {rollout['number']} stopped: {why}; revision "
                                   f"{serving['number']} keeps serving. Apply a fixed manifest, or the previous "
                                   "one to roll back")
            rolling = False

        # Replicas that ended are purged: a failed one is replaced by a new job below (after a backoff).
        live: list[JobRecord] = []
        failures = int(status.get("failures", 0))
        for k in kids:
            if k.state not in TERMINAL:
                live.append(k)
                continue
            if k.state is JobState.FAILED or (k.state is JobState.SUCCEEDED and not k.cancel_requested):
                # A server that exits unasked failed, whatever its exit code.
                k_hash = _revision_hash(k) or serving_hash
                if rolling and rollout is not None and k_hash == rollout["hash"]:
                    rollout["failures"] += 1
                    rollout["message"] = f"replica {k.name} failed: {k.message}"
                    if rollout["failures"] >= self.rollout_max_failures:
                        fail_rollout(f"{rollout['failures']} of its replicas failed (last: {k.name}: {k.message})")
                    else:
                        backoff = min(2.0 ** (rollout["failures"] - 1), MAX_BACKOFF_S)
                        rollout["retryAt"] = now + backoff
                        event("ReplicaFailed", f"replica {k.name} of revision {rollout['number']} failed: "
                                               f"{k.message}; replaced in {backoff:g} s")
                elif k_hash == serving_hash:
                    failures += 1
                    backoff = min(2.0 ** (failures - 1), MAX_BACKOFF_S)
                    status["retryAt"] = now + backoff
                    event("ReplicaFailed", f"replica {k.name} failed: {k.message}; replaced in {backoff:g} s")
            self.store.delete_job(k.id)
        status["failures"] = failures
        if serving is None:  # the first revision: resolve its model before anything runs
            try:
                serving = self._revision(d, manifest, target, event)
            except (ModelplaneError, ValueError) as exc:
                message = getattr(exc, "message", str(exc))
                if status.get("error") != message:
                    event("ModelUnavailable", message)
                status.update(phase="Failed", error=message, events=events[-HISTORY:])
                self.store.update_deployment(d.name, expected_version=d.resource_version, status=status)
                return
        elif not Path(serving["modelPath"]).exists():
            # The cache was cleared: fetch the version again (to the same path) for new replicas.
            from modelplane.serve.deployment import materialize_ref

            with contextlib.suppress(ModelplaneError, ValueError):
                materialize_ref(serving["modelRef"], self._registry_for(serving["modelRef"]), self.cache_dir)
        if rolling and rollout is not None and "template" not in rollout:
            try:
                rollout.update(self._revision(d, manifest, target, event))
            except (ModelplaneError, ValueError) as exc:
                fail_rollout(f"its model cannot be loaded: {getattr(exc, 'message', str(exc))}")
        effective = rollout if rolling and rollout is not None else serving
        retry_at = float(effective.get("retryAt", 0.0)) if effective is rollout else float(status.get("retryAt", 0.0))

        draining: dict[str, float] = {n: t for n, t in dict(status.get("draining", {})).items()
                                      if any(k.name == n for k in live)}
        before = {r["name"]: bool(r.get("ready")) for r in status.get("replicas", [])}
        replicas = [self._observe(k, draining, before.get(k.name, False), serving_hash) for k in live]
        active = [r for r in replicas if not r["draining"]]
        ready = [r for r in active if r["ready"]]
        fresh = d.load_at is not None and now - d.load_at <= self.load_stale_s
        load = d.load if fresh else {}
        in_flight, waiting = float(load.get("inFlight", 0.0)), float(load.get("waiting", 0.0))
        decision = self._decide(d, manifest, Observation(now, len(ready), len(active) - len(ready), in_flight,
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

        # Replicas of the effective revision are "new", any other is "old" (draining ones are neither).
        new = [r for r in active if r["revisionHash"] == effective["hash"]]
        old = [r for r in active if r["revisionHash"] != effective["hash"]]
        new_ready, old_ready = [r for r in new if r["ready"]], [r for r in old if r["ready"]]
        surge, unavailable = manifest.spec.strategy.bounds(desired)
        step = plan_rollout(desired, surge, unavailable, len(new), len(new_ready), len(old), len(old_ready))
        replaced = f"replaced by revision {effective['number']}"
        drop = [(r, replaced) for r in [r for r in old if not r["ready"]][: step.drop_unready_old]]
        drop += [(r, replaced) for r in self._least_busy(old_ready, step.drop_ready_old, load)]
        if len(new) > desired:
            # Scaled down: replicas without traffic first (not placed, still booting) cost nothing.
            idle = [r for r in new if not r["ready"]][: len(new) - desired]
            drop += [(r, "scaled down") for r in idle]
            drop += [(r, "scaled down") for r in self._least_busy(new_ready, len(new) - desired - len(idle), load)]
        if step.create and now >= retry_at:
            taken = {k.name for k in kids}
            for _ in range(step.create):
                taken.add(self._create_replica(d, effective["template"], taken))
        for r, why in drop:
            if r["ready"]:
                draining[r["name"]] = now  # out of the gateway's list now, stopped after the delay
                event("Draining", f"replica {r['name']} ({why}) leaves the gateway; stopping in "
                                  f"{self.drain_delay_s:g} s")
                r["draining"], r["ready"] = True, False
            else:
                self._cancel(r["job"], f"{why} before it served")
        for r in replicas:
            if r["draining"] and now - draining.get(r["name"], now) >= self.drain_delay_s:
                self._cancel(r["job"], "draining in-flight requests, then stopping")

        if rolling and rollout is not None:
            left = [r for r in replicas if r["revisionHash"] != rollout["hash"] and not r["draining"]]
            done = [r for r in replicas if r["revisionHash"] == rollout["hash"] and r["ready"]]
            if not left and len(done) >= desired:
                serving = {k: rollout[k] for k in _REVISION_KEYS}
                event("RolloutComplete", f"revision {rollout['number']} serves with {len(done)} ready "
                                         f"replica(s) (model {rollout.get('modelRef')})")
                rollout = None
                rolling = False
            elif now - float(rollout["startedAt"]) > manifest.spec.strategy.progress_deadline_s:
                fail_rollout(f"{len(done)}/{desired} new replicas ready after "
                             f"{manifest.spec.strategy.progress_deadline_s:g} s (progressDeadlineSeconds)"
                             + (f"; last problem: {rollout['message']}" if rollout["message"] else ""))
        ready = [r for r in replicas if r["ready"]]
        n_ready = len(ready)
        phase = "ScaledToZero" if desired == 0 else "Ready" if n_ready >= desired else "Progressing"
        status.update(
            phase="Updating" if rolling else phase,
            ready=n_ready, desired=desired, endpoints=sorted(r["endpoint"] for r in ready),
            replicas=[{k: v for k, v in r.items() if k != "job"} for r in replicas],
            draining=draining, observed={"inFlight": in_flight, "waiting": waiting,
                                         "rps": float(load.get("rps", 0.0)), "fresh": fresh},
            lastDecision={"time": now, "desired": desired, "reason": decision.reason, "panic": decision.panic},
            events=events[-HISTORY:], error="", revision=serving, rollout=rollout,
            modelSource=serving["model"], modelRef=serving["modelRef"], modelPath=serving["modelPath"],
        )
        if desired != d.desired or _without_time(status) != _without_time(d.status):
            self.store.update_deployment(d.name, expected_version=d.resource_version, desired=desired, status=status)

    def _least_busy(self, ready: list[dict[str, Any]], count: int, load: dict[str, Any]) -> list[dict[str, Any]]:
        """``count`` ready replicas with the fewest requests outstanding at the gateway."""
        if count <= 0:
            return []
        by_url = {r["endpoint"]: r["name"] for r in ready}
        outstanding = {by_url[u]: int(n) for u, n in dict(load.get("outstanding", {})).items() if u in by_url}
        chosen = set(pick_scale_down({r["name"]: outstanding.get(r["name"], 0) for r in ready}, count))
        return [r for r in ready if r["name"] in chosen]

    def _revision(self, d: DeploymentRecord, manifest: InferenceDeployment, target: Any,
                  event: Callable[..., None]) -> dict[str, Any]:
        """What replicas of a revision are made from: its model fetched to the local cache, and the
        replica job template (kept in the status, so that the revision can still be scaled and its
        failed replicas replaced while the manifest already names another one)."""
        from modelplane.serve.deployment import materialize_ref

        ref, local = materialize_ref(target.model, self._registry_for(target.model), self.cache_dir)
        path = str(local.resolve())
        event("ModelResolved", f"{target.model} -> {ref}")
        self._record_lineage(d, ref)
        return {"number": target.number, "hash": target.hash, "model": target.model, "modelRef": ref,
                "modelPath": path, "template": self._replica_template(d, manifest, target, path)}

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

    def _observe(self, job: JobRecord, draining: dict[str, float], was_ready: bool,
                 default_hash: str) -> dict[str, Any]:
        tasks = self.store.list_tasks(job.id)
        endpoint = tasks[0].endpoint if tasks else ""
        is_draining = job.name in draining or job.cancel_requested
        ready = False
        if job.state is JobState.RUNNING and endpoint and not is_draining:
            probed = self._probe(endpoint)
            ready = was_ready if probed is None else probed
        notes = (job.manifest_doc.get("metadata") or {}).get("annotations") or {}
        number = str(notes.get(REVISION_ANNOTATION, ""))
        return {"name": job.name, "job": job, "state": job.state.value, "node": tasks[0].node if tasks else "",
                "endpoint": endpoint, "ready": ready, "draining": is_draining,
                "revision": int(number) if number.isdigit() else None,
                "revisionHash": _revision_hash(job) or default_hash}

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

    def _replica_template(self, d: DeploymentRecord, manifest: InferenceDeployment, target: Any,
                          model_path: str) -> dict[str, Any]:
        """The job manifest every replica of this revision is made from (name and index added at creation)."""
        from modelplane.serve.deployment import REVISION_ANNOTATIONS, replica_task_command

        doc = copy.deepcopy(d.manifest_doc)
        meta = doc.setdefault("metadata", {})
        meta.setdefault("labels", {})[DEPLOYMENT_LABEL] = d.name
        notes = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in REVISION_ANNOTATIONS}
        notes[REVISION_ANNOTATION] = str(target.number)
        notes[REVISION_HASH_ANNOTATION] = target.hash
        meta["annotations"] = notes
        spec = doc["spec"]
        spec["replicas"] = 1
        for in_place in ("autoscaling", "strategy"):
            spec.pop(in_place, None)
        spec["template"]["command"] = replica_task_command(manifest, model_path)
        return doc

    def _create_replica(self, d: DeploymentRecord, template: dict[str, Any], taken: set[str]) -> str:
        k = 0
        while f"{d.name}-{k}" in taken:
            k += 1
        name = f"{d.name}-{k}"
        doc = copy.deepcopy(template)
        doc["metadata"]["name"] = name
        doc["metadata"]["annotations"][INDEX_ANNOTATION] = str(k)
        manifest = parse_manifest(doc)
        queue = self.store.get_queue(d.queue)
        w = to_workload(manifest, "check", 0.0)
        priority = compute_priority("InferenceDeployment", w.total_gpu_milli, manifest.spec.estimated_duration,
                                    w.deadline, self.clock(), queue_priority=queue.spec.priority,
                                    explicit=manifest.spec.priority)
        try:
            self.store.create_job(doc, priority=priority)
        except Conflict:
            taken.add(name)  # a job of that name exists outside this deployment: use the next index
            return self._create_replica(d, template, taken)
        return name

    def _cancel(self, job: JobRecord, why: str) -> None:
        if job.cancel_requested:
            return
        try:
            self.store.update_job_fields(job.id, cancel_requested=True)
            self.store.add_event(job.id, "CancelRequested", why)
        except NotFound:
            pass
