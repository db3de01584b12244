"""Discrete-event simulation on a virtual clock, driving any ``Scheduler`` (the live code itself).

Events are job arrivals and job ends. After the events of one instant (or, with ``round_interval``,
of one scheduling tick) the simulator hands the scheduler a ``SchedulingInput`` snapshot exactly as
the control plane does, and applies its answer: preemptions first (the victim is stopped and
requeued with the work it has left, as after a checkpoint), then placements, each checked against
the free capacity of the pool so that an over-allocation is caught as a scheduler bug.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from modelplane.core.errors import ModelplaneError
from modelplane.core.node import Node
from modelplane.core.placement import NodeFree, OverAllocation, Placement, free_capacity
from modelplane.core.queue import QueueSpec
from modelplane.core.workload import Workload
from modelplane.scheduler.interface import RunningWorkload, Scheduler, SchedulingInput


class SimulationError(ModelplaneError):
    """The scheduler under test returned something impossible (a bug in the policy)."""


@dataclass(frozen=True)
class SimJob:
    """A job of a trace: its workload (``created_at`` = submission time) and its true run time."""

    workload: Workload
    duration: float


@dataclass
class JobRecord:
    job_id: str
    queue: str
    gpus: float
    submit: float
    duration: float
    start: float | None = None  # first start
    end: float | None = None
    preemptions: int = 0
    waited: float = 0.0  # total time pending, across requeues

    @property
    def jct(self) -> float | None:
        return None if self.end is None else self.end - self.submit


@dataclass
class SimResult:
    scheduler: str
    records: list[JobRecord]
    capacity_gpus: float
    # (time, GPUs in use, jobs waiting) after every scheduling round
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    rounds: int = 0
    wall_seconds: float = 0.0

    def finished(self) -> list[JobRecord]:
        return [r for r in self.records if r.end is not None]

    def summary(self, until: float | None = None) -> dict[str, object]:
        """Figures of the run; utilisation is measured up to ``until`` (default: the last submission)."""
        done = self.finished()
        waits = sorted(r.waited for r in self.records if r.start is not None)
        jcts = [r.jct for r in done if r.jct is not None]
        per_queue: dict[str, list[float]] = {}
        for r in self.records:
            if r.start is not None:
                per_queue.setdefault(r.queue, []).append(r.waited)
        if until is None:
            until = max((r.submit for r in self.records), default=0.0)
        util, util_waiting = self.utilization(until)
        return {
            "scheduler": self.scheduler,
            "jobs": len(self.records),
            "finished": len(done),
            "never_started": sum(1 for r in self.records if r.start is None),
            "mean_queueing_delay_s": _mean(waits),
            "p50_queueing_delay_s": _pct(waits, 50),
            "p99_queueing_delay_s": _pct(waits, 99),
            "mean_jct_s": _mean(jcts),
            "gpu_utilization": util,
            "gpu_utilization_while_jobs_wait": util_waiting,
            "max_wait_any_queue_s": max((max(v) for v in per_queue.values()), default=0.0),
            "mean_wait_per_queue_s": {q: _mean(v) for q, v in sorted(per_queue.items())},
            "preemptions": sum(r.preemptions for r in self.records),
            "rounds": self.rounds,
            "wall_seconds": round(self.wall_seconds, 2),
        }

    def utilization(self, until: float = math.inf) -> tuple[float, float]:
        """Time-weighted share of GPUs in use up to ``until``: overall, and only while some job waits."""
        busy = span = busy_w = span_w = 0.0
        for (t0, used, waiting), (t1, _, _) in itertools.pairwise(self.samples):
            dt = min(t1, until) - t0
            if dt <= 0:
                continue
            busy += used * dt
            span += self.capacity_gpus * dt
            if waiting:
                busy_w += used * dt
                span_w += self.capacity_gpus * dt
        return (round(busy / span, 4) if span else 0.0, round(busy_w / span_w, 4) if span_w else 0.0)


def _mean(xs: Sequence[float]) -> float:
    return round(sum(xs) / len(xs), 2) if xs else 0.0


def _pct(sorted_xs: Sequence[float], p: float) -> float:
    if not sorted_xs:
        return 0.0
    k = min(len(sorted_xs) - 1, max(0, math.ceil(p / 100 * len(sorted_xs)) - 1))
    return round(sorted_xs[k], 2)


_FINISH, _ARRIVE, _TICK = 0, 1, 2


class Simulator:
    """One run of one scheduler over one job stream on one pool."""

    def __init__(
        self,
        nodes: Sequence[Node],
        queues: Mapping[str, QueueSpec],
        scheduler: Scheduler,
        *,
        round_interval: float = 0.0,
        horizon: float = math.inf,
    ) -> None:
        self.nodes = list(nodes)
        self.queues = dict(queues)
        self.scheduler = scheduler
        self.round_interval = round_interval
        self.horizon = horizon
        self.capacity_gpus = sum(n.gpu_count for n in self.nodes)

    def run(self, jobs: Sequence[SimJob], progress: Callable[[int, int], None] | None = None) -> SimResult:
        t_wall = time.perf_counter()
        records = {j.workload.job_id: JobRecord(
            j.workload.job_id, j.workload.queue, j.workload.total_gpu_milli / 1000, j.workload.created_at, j.duration)
            for j in jobs}
        if len(records) != len(jobs):
            raise SimulationError("job ids in the trace are not unique", hint="give every job its own job_id")
        result = SimResult(self.scheduler.name, list(records.values()), float(self.capacity_gpus))
        seq = itertools.count()
        events: list[tuple[float, int, int, str, int]] = []  # (time, kind, seq, job_id, version)
        for j in jobs:
            heapq.heappush(events, (j.workload.created_at, _ARRIVE, next(seq), j.workload.job_id, 0))
        by_id = {j.workload.job_id: j for j in jobs}
        pending: dict[str, Workload] = {}
        pending_since: dict[str, float] = {}
        running: dict[str, RunningWorkload] = {}
        remaining: dict[str, float] = {j.workload.job_id: j.duration for j in jobs}
        version: dict[str, int] = {}
        free = free_capacity(self.nodes, ())
        used_milli = 0
        finished = 0
        tick_at: float | None = None

        while events:
            now = events[0][0]
            if now > self.horizon:
                break
            changed = False
            while events and events[0][0] == now:
                _, kind, _, job_id, ver = heapq.heappop(events)
                if kind == _ARRIVE:
                    pending[job_id] = by_id[job_id].workload
                    pending_since[job_id] = now
                    changed = True
                elif kind == _FINISH:
                    if version.get(job_id, 0) != ver or job_id not in running:
                        continue  # ended by a preemption meanwhile
                    rw = running.pop(job_id)
                    used_milli -= self._release(free, rw.placement)
                    records[job_id].end = now
                    finished += 1
                    changed = True
                    if progress is not None and finished % 1000 == 0:
                        progress(finished, len(jobs))
                else:
                    tick_at = None
                    changed = True
            if not changed or not pending:
                if changed:
                    result.samples.append((now, used_milli / 1000, 0))
                continue
            if self.round_interval > 0:
                due = math.ceil(now / self.round_interval) * self.round_interval
                if due > now:
                    if tick_at is None or tick_at > due:
                        tick_at = due
                        heapq.heappush(events, (due, _TICK, next(seq), "", 0))
                    result.samples.append((now, used_milli / 1000, len(pending)))
                    continue
            out = self.scheduler.schedule(SchedulingInput(
                nodes=self.nodes, queues=self.queues, running=list(running.values()),
                pending=list(pending.values()), now=now))
            result.rounds += 1
            for pre in out.preemptions:
                if pre.job_id not in running:
                    raise SimulationError(f"scheduler {self.scheduler.name} preempted {pre.job_id}, which is not running")
                rw = running.pop(pre.job_id)
                used_milli -= self._release(free, rw.placement)
                remaining[pre.job_id] = max(0.0, remaining[pre.job_id] - (now - rw.started_at))
                version[pre.job_id] = version.get(pre.job_id, 0) + 1
                records[pre.job_id].preemptions += 1
                pending[pre.job_id] = rw.workload
                pending_since[pre.job_id] = now
            for p in out.placements:
                w = pending.pop(p.job_id, None)
                if w is None:
                    raise SimulationError(f"scheduler {self.scheduler.name} placed {p.job_id}, which is not pending")
                self._check_gang(w, p)
                try:
                    used_milli += self._take(free, p)
                except OverAllocation as e:
                    raise SimulationError(f"scheduler {self.scheduler.name} over-allocated: {e}") from e
                rec = records[p.job_id]
                rec.waited += now - pending_since.pop(p.job_id)
                if rec.start is None:
                    rec.start = now
                running[p.job_id] = RunningWorkload(w, p, started_at=now, last_checkpoint_at=now)
                v = version.get(p.job_id, 0)
                heapq.heappush(events, (now + remaining[p.job_id], _FINISH, next(seq), p.job_id, v))
            result.samples.append((now, used_milli / 1000, len(pending)))
        if result.samples:
            last = result.samples[-1]
            result.samples.append((last[0], last[1], 0))
        result.wall_seconds = time.perf_counter() - t_wall
        return result

    @staticmethod
    def _check_gang(w: Workload, p: Placement) -> None:
        if len(p.assignments) != w.task_count:
            raise SimulationError(
                f"workload {w.job_id} has {w.task_count} tasks but {len(p.assignments)} were placed (gangs are all or nothing)")

    @staticmethod
    def _take(free: dict[str, NodeFree], p: Placement) -> int:
        taken: list[int] = []
        try:
            for a in p.assignments:
                if a.node not in free:
                    raise OverAllocation(f"unknown node {a.node}")
                free[a.node].take(a)
                taken.append(1)
        except OverAllocation:
            for a in p.assignments[: len(taken)]:
                free[a.node].give_back(a)
            raise
        return sum(a.gpu_milli * len(a.devices) for a in p.assignments)

    @staticmethod
    def _release(free: dict[str, NodeFree], p: Placement) -> int:
        for a in p.assignments:
            free[a.node].give_back(a)
        return sum(a.gpu_milli * len(a.devices) for a in p.assignments)
