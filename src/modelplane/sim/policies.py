"""Queueing baselines for side-by-side replays: FIFO, SRTF, Tiresias-style LAS, EASY backfill.

Each is a ``Scheduler`` (``schedule(SchedulingInput) -> SchedulingResult``) like the real policy,
and places gangs all-or-nothing with ``first_fit.try_place`` over nodes in topology order (switch,
then name), so that a gang fills one switch before the next. They differ only in which pending job
goes first and whether a running job may be preempted:

* ``fifo``: submission order; a job that does not fit blocks everyone behind it.
* ``srtf``: shortest remaining (estimated) time first; a waiting job may preempt running jobs with
  more time left than its whole estimate (longest remaining first). Equal jobs never preempt each
  other, so there are no cycles.
* ``tiresias``: least attained service with two queues (Gu et al., NSDI'19): jobs that have used
  less than ``threshold`` GPU-seconds go first, in submission order; they may preempt jobs of the
  second queue (most attained first). A preempted job has attained at least the threshold, so it
  cannot preempt back.
* ``easy``: FIFO with EASY backfill (Lifka, 1995): the blocked head gets a reservation at the time
  enough GPUs will be free by the running jobs' estimates; later jobs start now only if they end
  before it or fit in the GPUs the head will not need.

``estimated_duration_s`` of a workload is its runtime estimate; jobs without one count as endless.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from modelplane.core.node import Node
from modelplane.core.placement import NodeFree, Placement, free_capacity
from modelplane.core.workload import Workload
from modelplane.scheduler.first_fit import try_place
from modelplane.scheduler.interface import Preemption, RunningWorkload, SchedulingInput, SchedulingResult


def topology_order(nodes: Iterable[Node]) -> list[Node]:
    return sorted((n for n in nodes if n.schedulable), key=lambda n: (n.topology.group, n.topology.switch, n.name))


def gpus(w: Workload) -> float:
    return w.total_gpu_milli / 1000


def remaining_estimate(r: RunningWorkload, now: float) -> float:
    est = r.workload.estimated_duration_s
    return math.inf if est is None else max(0.0, est - (now - r.started_at))


class _Base:
    name = "base"

    def order(self, inp: SchedulingInput) -> list[Workload]:
        raise NotImplementedError

    def schedule(self, inp: SchedulingInput) -> SchedulingResult:
        raise NotImplementedError

    def _round(self, inp: SchedulingInput) -> tuple[SchedulingResult, dict[str, NodeFree], list[Node]]:
        nodes = topology_order(inp.nodes)
        free = free_capacity(nodes, (r.placement for r in inp.running))
        return SchedulingResult(), free, nodes

    @staticmethod
    def _unknown_queue(w: Workload, inp: SchedulingInput, result: SchedulingResult) -> bool:
        if w.queue not in inp.queues:
            result.pending_reasons[w.job_id] = f"queue {w.queue!r} does not exist; create it or change spec.queue"
            return True
        return False


class FifoScheduler(_Base):
    name = "fifo"

    def schedule(self, inp: SchedulingInput) -> SchedulingResult:
        result, free, nodes = self._round(inp)
        blocked: Workload | None = None
        for w in sorted(inp.pending, key=lambda w: (w.created_at, w.job_id)):
            if self._unknown_queue(w, inp, result):
                continue
            if blocked is not None:
                result.pending_reasons[w.job_id] = f"behind {blocked.job_id}, which does not fit yet (FIFO)"
                continue
            p = try_place(w, free, nodes)
            if p is None:
                blocked = w
                result.pending_reasons[w.job_id] = f"needs {gpus(w):g} GPUs at once; not free yet"
            else:
                result.placements.append(p)
        return result


def _preempt_for(
    w: Workload, victims: Sequence[RunningWorkload], free: dict[str, NodeFree], nodes: list[Node]
) -> tuple[list[RunningWorkload], Placement] | None:
    """Release victims in order until ``w`` fits; keeps the fewest prefix that works, else restores."""
    released: list[RunningWorkload] = []
    for rw in victims:
        for a in rw.placement.assignments:
            if a.node in free:
                free[a.node].give_back(a)
        released.append(rw)
        p = try_place(w, free, nodes)
        if p is not None:
            return released, p
    for rw in released:
        for a in rw.placement.assignments:
            if a.node in free:
                free[a.node].take(a)
    return None


class _PreemptiveGreedy(_Base):
    """Greedy in ``order``; a job that does not fit may preempt the victims ``victims_for`` names."""

    def victims_for(self, w: Workload, inp: SchedulingInput, running: list[RunningWorkload]) -> list[RunningWorkload]:
        raise NotImplementedError

    def schedule(self, inp: SchedulingInput) -> SchedulingResult:
        result, free, nodes = self._round(inp)
        running = list(inp.running)
        preempted: set[str] = set()
        for w in self.order(inp):
            if self._unknown_queue(w, inp, result):
                continue
            p = try_place(w, free, nodes)
            if p is None:
                cands = [r for r in self.victims_for(w, inp, running) if r.workload.job_id not in preempted]
                got = _preempt_for(w, cands, free, nodes) if cands else None
                if got is not None:
                    victims, p = got
                    for v in victims:
                        preempted.add(v.workload.job_id)
                        result.preemptions.append(Preemption(v.workload.job_id, f"makes room for {w.job_id} ({self.name})"))
                    running = [r for r in running if r.workload.job_id not in preempted]
            if p is None:
                result.pending_reasons[w.job_id] = f"needs {gpus(w):g} GPUs at once; not free yet"
            else:
                result.placements.append(p)
        return result


class SrtfScheduler(_PreemptiveGreedy):
    name = "srtf"

    def order(self, inp: SchedulingInput) -> list[Workload]:
        def est(w: Workload) -> float:
            return math.inf if w.estimated_duration_s is None else w.estimated_duration_s

        return sorted(inp.pending, key=lambda w: (est(w), w.created_at, w.job_id))

    def victims_for(self, w: Workload, inp: SchedulingInput, running: list[RunningWorkload]) -> list[RunningWorkload]:
        mine = math.inf if w.estimated_duration_s is None else w.estimated_duration_s
        longer = [r for r in running if remaining_estimate(r, inp.now) > mine]
        return sorted(longer, key=lambda r: -remaining_estimate(r, inp.now))


class TiresiasScheduler(_PreemptiveGreedy):
    """Two-queue least attained service; remembers attained GPU-seconds across rounds."""

    name = "tiresias"

    def __init__(self, threshold_gpu_s: float = 3600.0) -> None:
        self.threshold = threshold_gpu_s
        self.attained: dict[str, float] = {}
        self._seen: dict[str, float] = {}

    def _update(self, inp: SchedulingInput) -> None:
        for r in inp.running:
            jid = r.workload.job_id
            since = max(self._seen.get(jid, r.started_at), r.started_at)
            self.attained[jid] = self.attained.get(jid, 0.0) + gpus(r.workload) * max(0.0, inp.now - since)
            self._seen[jid] = inp.now

    def high(self, w: Workload) -> bool:
        return self.attained.get(w.job_id, 0.0) < self.threshold

    def order(self, inp: SchedulingInput) -> list[Workload]:
        self._update(inp)
        return sorted(inp.pending, key=lambda w: (not self.high(w), w.created_at, w.job_id))

    def victims_for(self, w: Workload, inp: SchedulingInput, running: list[RunningWorkload]) -> list[RunningWorkload]:
        if not self.high(w):
            return []
        low = [r for r in running if not self.high(r.workload)]
        return sorted(low, key=lambda r: -self.attained.get(r.workload.job_id, 0.0))


class EasyBackfillScheduler(_Base):
    name = "easy"

    def schedule(self, inp: SchedulingInput) -> SchedulingResult:
        result, free, nodes = self._round(inp)
        now = inp.now
        ends = sorted((now + remaining_estimate(r, now), gpus(r.workload)) for r in inp.running)
        shadow: float | None = None
        extra = 0.0
        head: Workload | None = None
        for w in sorted(inp.pending, key=lambda w: (w.created_at, w.job_id)):
            if self._unknown_queue(w, inp, result):
                continue
            if head is None:
                p = try_place(w, free, nodes)
                if p is not None:
                    result.placements.append(p)
                    est = w.estimated_duration_s
                    ends.append((now + (math.inf if est is None else est), gpus(w)))
                    ends.sort()
                    continue
                head = w
                shadow, extra = self._reserve(w, free, ends)
                when = "an unknown time" if math.isinf(shadow) else f"t={shadow:.0f}"
                result.pending_reasons[w.job_id] = f"needs {gpus(w):g} GPUs at once; reserved for {when}"
                continue
            assert shadow is not None
            est = w.estimated_duration_s
            ends_before = est is not None and now + est <= shadow
            if not ends_before and gpus(w) > extra:
                result.pending_reasons[w.job_id] = f"would delay the reservation of {head.job_id} (EASY backfill)"
                continue
            p = try_place(w, free, nodes)
            if p is None:
                result.pending_reasons[w.job_id] = f"needs {gpus(w):g} GPUs at once; not free yet"
                continue
            result.placements.append(p)
            if not ends_before:
                extra -= gpus(w)
        return result

    @staticmethod
    def _reserve(w: Workload, free: dict[str, NodeFree], ends: list[tuple[float, float]]) -> tuple[float, float]:
        """(shadow time, GPUs spare at it) from the running jobs' estimated ends, counting GPUs."""
        avail = sum(f.gpu_free_milli for f in free.values()) / 1000
        need = gpus(w)
        if avail >= need:
            return 0.0, avail - need  # enough GPUs, but not in the right shape: do not hold anything back
        for t, g in ends:
            avail += g
            if avail >= need:
                return t, avail - need
        return math.inf, 0.0


BASELINES: dict[str, Callable[[], _Base]] = {
    "fifo": FifoScheduler,
    "srtf": SrtfScheduler,
    "tiresias": TiresiasScheduler,
    "easy": EasyBackfillScheduler,
}


def create_baseline(name: str) -> _Base:
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r}; known: {', '.join(sorted(BASELINES))}")
    return BASELINES[name]()
