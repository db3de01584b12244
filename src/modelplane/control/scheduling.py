"""The scheduler controller: snapshot the store, ask the scheduling policy, write its decisions.

Decisions are written through the job state machine with the resource version read in the
snapshot, so a job cancelled meanwhile is never admitted behind the user's back (the write fails
with Conflict and the next round sees the new state).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from modelplane.control.base import Controller
from modelplane.core.errors import Conflict, InvalidTransition, ModelplaneError
from modelplane.core.job import ACTIVE, JobState
from modelplane.core.node import Node
from modelplane.core.priority import compute_priority
from modelplane.core.spec import to_workload
from modelplane.core.workload import Workload
from modelplane.obs.metrics import PLACEMENT_LATENCY, PLACEMENTS, PREEMPTIONS, SCHEDULER_ROUND
from modelplane.scheduler.interface import RunningWorkload, Scheduler, SchedulingInput
from modelplane.store import JobRecord, Store

log = logging.getLogger("modelplane.control.scheduling")


def with_verified_tee(nodes: list[Node], store: Store, now: float) -> list[Node]:
    """The nodes as confidential jobs may see them: a node offers its TEE only while its latest
    attestation (``POST /nodes/{name}/attestation``) verified, is fresh and is of the declared kind.

    The scheduler's TEE filter reads ``Node.tee``; clearing it here for an unverified node keeps the
    scheduler pure (it never reads attestations) and the attestation check in one place
    (``privacy.tee.placement_allowed``).
    """
    declared = [n for n in nodes if n.tee]
    if not declared:
        return nodes
    from modelplane.privacy.tee import TeeRequirement, placement_allowed
    from modelplane.store.sensitive_catalog import attestations

    results = attestations(store, [n.name for n in declared])
    unverified = {n.name for n in declared
                  if not placement_allowed(results.get(n.name), TeeRequirement(confidential=True, tee_types=frozenset({n.tee or ""})),
                                           int(now))}
    return [replace(n, tee=None) if n.name in unverified else n for n in nodes]


def workload_of(job: JobRecord, now: float, queue_priority: int = 0,
                cache: dict[tuple[str, str], tuple[Workload, int | None]] | None = None) -> Workload:
    """The job as the scheduler sees it, with its priority as of ``now`` (deadlines come closer).

    Parsing a manifest is the costly part, so the parsed workload is cached per job and manifest;
    the priority is recomputed every round.
    """
    key = (job.id, job.name)
    hit = cache.get(key) if cache is not None else None
    if hit is None:
        manifest = job.manifest
        hit = (to_workload(manifest, job.id, job.created_at), manifest.spec.priority)
        if cache is not None:
            cache[key] = hit
    base, explicit = hit
    priority = compute_priority(base.kind, base.total_gpu_milli, base.estimated_duration_s, base.deadline, now,
                                queue_priority=queue_priority, explicit=explicit)
    return replace(base, priority=priority)


class SchedulerController(Controller):
    name = "scheduler"

    def __init__(self, store: Store, scheduler: Scheduler, clock: Callable[[], float]) -> None:
        self.store = store
        self.scheduler = scheduler
        self.clock = clock
        self.last_round_seconds = 0.0
        # Manifests never change after submission, so a job's parsed workload is kept while it lives.
        self._workloads: dict[tuple[str, str], tuple[Workload, int | None]] = {}

    def reconcile(self) -> None:
        pending_jobs, _ = self.store.list_jobs(states=[JobState.PENDING], limit=100_000)
        pending_jobs = [j for j in pending_jobs if not j.cancel_requested]
        if not pending_jobs:
            return
        now = self.clock()
        queues = {q.name: q.spec for q in self.store.list_queues()}
        nodes = with_verified_tee([n.to_node() for n in self.store.list_nodes()], self.store, now)
        active, _ = self.store.list_jobs(states=sorted(ACTIVE), limit=100_000)
        running = [
            RunningWorkload(workload_of(j, now, queues[j.queue].priority if j.queue in queues else 0,
                                        self._workloads),
                            j.placement, started_at=j.started_at or j.updated_at,
                            last_checkpoint_at=j.last_checkpoint_at)
            for j in active if j.placement is not None
        ]
        by_id = {j.id: j for j in pending_jobs}
        pending: list[Workload] = []
        for j in pending_jobs:
            try:
                pending.append(workload_of(j, now, queues[j.queue].priority if j.queue in queues else 0,
                                           self._workloads))
            except ModelplaneError as exc:  # a manifest that no longer validates (e.g. after an upgrade)
                self.store.transition_job(j.id, JobState.FAILED, "InvalidSpec", str(exc))
        live = {j.id for j in pending_jobs} | {j.id for j in active}
        for key in [k for k in self._workloads if k[0] not in live]:
            del self._workloads[key]
        started = time.perf_counter()
        result = self.scheduler.schedule(SchedulingInput(nodes, queues, running, pending, now))
        for placement in result.placements:
            job = by_id[placement.job_id]
            nodes_used = ", ".join(placement.nodes)
            try:
                self.store.transition_job(job.id, JobState.ADMITTED, "Scheduled",
                                          f"placed {len(placement.assignments)} task(s) on {nodes_used}",
                                          expected_version=job.resource_version, placement=placement)
                PLACEMENTS.labels(job.queue).inc()
                PLACEMENT_LATENCY.labels(job.queue).observe(max(0.0, now - job.created_at))
            except (Conflict, InvalidTransition):
                log.info("job %s changed while being scheduled; next round decides again", job.name)
        for pre in result.preemptions:
            try:
                victim = self.store.transition_job(pre.job_id, JobState.PREEMPTED, "Preempted", pre.reason)
                PREEMPTIONS.labels(victim.queue).inc()
            except (Conflict, InvalidTransition):
                log.info("job %s changed before it could be preempted", pre.job_id)
        self.last_round_seconds = time.perf_counter() - started
        SCHEDULER_ROUND.observe(self.last_round_seconds)
        for job_id, why in result.pending_reasons.items():
            waiting = by_id.get(job_id)
            if waiting is not None and waiting.pending_reason != why:
                with contextlib.suppress(Conflict):
                    self.store.update_job_fields(job_id, pending_reason=why,
                                                 expected_version=waiting.resource_version)
