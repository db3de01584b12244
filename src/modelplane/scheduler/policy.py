"""The default scheduling policy: admission, ordering, placement, backfill, preemption, reasons.

One round, over a snapshot (``SchedulingInput``), never touching the clock or the store:

1. **Order.** ``fair`` (default): queues take turns by weighted dominant share (see ``quota.py``),
   each queue's workloads by priority, then submission time. ``priority``: all pending by priority,
   then submission time. ``fifo``: by submission time only. ``sjf``: shortest runtime estimate
   first (unknown estimates last), for SJF/SRTF-style baselines.
2. **Admission.** The workload's queue must have quota for its whole accelerator demand on some
   model (``quota.py``: nominal quota, cohort borrowing within limits); placement then only uses
   the admitted models. Quota refusals never block the workloads behind.
3. **Placement** (``placement.py``): filters, then scores; gangs all-or-nothing, topology-aware.
4. **Backfill** (``backfill.py``): the first workload that finds no room gets an EASY reservation;
   the others start only where they cannot delay it. Without backfill, ``strict_fifo`` makes a
   blocked head stop every workload behind it (classic FIFO); otherwise they are tried greedily.
5. **Preemption** (``preemption.py``): blocked workloads (by room, or by reclaimable quota) may
   preempt strictly lower-priority work under the rules given there; no cycles are possible.
6. **Why pending** (``explain.py``): every workload not placed gets a one-line reason.

Priority is ``Workload.priority`` (``core/priority.py``: task type, size, deadline, queue priority),
higher first. Queue kinds: ``training`` runs are reserved (never preempted by lower or equal
priority, nor by other queues while within quota); ``inference`` is elastic (replicas are placed
like any workload; scaling is the autoscaler's job); ``batch`` is preemptible by the other kinds.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from modelplane.core.node import Node
from modelplane.core.placement import Placement
from modelplane.core.workload import TaskRequest, Workload
from modelplane.scheduler.backfill import Reservation, estimated_end, reserve
from modelplane.scheduler.explain import Explainer
from modelplane.scheduler.filters import Eligibility
from modelplane.scheduler.interface import Preemption, SchedulingInput, SchedulingResult
from modelplane.scheduler.placement import PlacementOptions, Placer
from modelplane.scheduler.pool import Pool
from modelplane.scheduler.preemption import select_victims
from modelplane.scheduler.quota import QuotaBook, QuotaVerdict, admissible_models
from modelplane.scheduler.scoring import NodeScorer, ScoreContext

MAX_RESERVE_TRIES = 4
ORDERS = ("fair", "priority", "fifo", "sjf")


@dataclass(frozen=True)
class PolicyOptions:
    order: str = "fair"
    quota: bool = True
    backfill: bool = True
    strict_fifo: bool = False
    preemption: bool = True
    max_preemptors: int = 8  # blocked workloads that may preempt per round (bounds the work)
    # Task sizes FGD-like scorers measure fragmentation against; empty: the tasks pending and
    # running this round. A replay passes the trace's own distribution, as the FGD paper does.
    workload_mix: Sequence[tuple[TaskRequest, float]] = ()
    placement: PlacementOptions = field(default_factory=PlacementOptions)
    seed: int = 0


def workload_mix(workloads: Iterable[Workload]) -> list[tuple[TaskRequest, float]]:
    """Task sizes of the given workloads, weighted by count: what FGD measures fragmentation against."""
    counts: dict[TaskRequest, float] = {}
    for w in workloads:
        for ps in w.pod_sets:
            counts[ps.request] = counts.get(ps.request, 0.0) + ps.count
    total = sum(counts.values()) or 1.0
    return [(r, c / total) for r, c in counts.items()]


class PolicyScheduler:
    """The full policy; ``registry.create_scheduler`` builds it under several names and options."""

    def __init__(self, name: str = "default", options: PolicyOptions | None = None,
                 scorer: NodeScorer | None = None) -> None:
        self.name = name
        self.options = options or PolicyOptions()
        self.scorer = scorer
        if self.options.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {self.options.order!r}")

    # -- ordering ----------------------------------------------------------------------------------

    def _order(self, pending: Sequence[Workload], book: QuotaBook) -> Iterator[Workload]:
        if self.options.order == "fifo":
            yield from sorted(pending, key=lambda w: (w.created_at, w.job_id))
            return
        if self.options.order == "sjf":
            yield from sorted(pending, key=lambda w: (
                w.estimated_duration_s if w.estimated_duration_s is not None else math.inf, w.created_at, w.job_id))
            return
        by_priority = sorted(pending, key=lambda w: (-w.priority, w.created_at, w.job_id))
        if self.options.order == "priority":
            yield from by_priority
            return
        lines: dict[str, list[Workload]] = {}
        for w in by_priority:
            lines.setdefault(w.queue, []).append(w)
        heap: list[tuple[float, int, float, str, str, int]] = []
        for q, line in lines.items():
            head = line[0]
            heap.append((book.share(q), -head.priority, head.created_at, head.job_id, q, 0))
        heapq.heapify(heap)
        while heap:
            _, _, _, _, q, pos = heapq.heappop(heap)
            w = lines[q][pos]
            yield w
            if pos + 1 < len(lines[q]):
                nxt = lines[q][pos + 1]
                heapq.heappush(heap, (book.share(q), -nxt.priority, nxt.created_at, nxt.job_id, q, pos + 1))

    # -- the round ---------------------------------------------------------------------------------

    def schedule(self, inp: SchedulingInput) -> SchedulingResult:
        opts = self.options
        result = SchedulingResult()
        now = inp.now
        pool = Pool(inp.nodes, (r.placement for r in inp.running))
        nodes = {n.name: n for n in inp.nodes}
        eligibility = Eligibility(pool.nodes)
        mix = opts.workload_mix or workload_mix([*inp.pending, *(r.workload for r in inp.running)])
        ctx = ScoreContext(workload_mix=mix, seed=opts.seed)
        placer = Placer(pool, eligibility, self.scorer, ctx, opts.placement)
        book = QuotaBook(inp.queues)
        for r in inp.running:
            if r.workload.queue in inp.queues:
                book.charge(r.workload.queue, r.placement, nodes)
        holding: list[tuple[float, Placement]] = [
            (estimated_end(r.started_at, r.workload.estimated_duration_s), r.placement) for r in inp.running
        ]
        pending: list[Workload] = []
        for w in inp.pending:
            if w.queue in inp.queues:
                pending.append(w)
            else:
                result.pending_reasons[w.job_id] = f"queue {w.queue!r} does not exist; create it or change spec.queue"

        def admissible(w: Workload) -> list[str] | None:
            """Models the queue's quota admits for ``w`` (None: any, quota not checked)."""
            return self._admissible(w, pool, book)[0]

        reservation: Reservation | None = None
        reserve_tries = 0
        blocked_by: Workload | None = None
        unplaced: list[tuple[Workload, list[str] | None, QuotaVerdict | None]] = []
        explainer = Explainer(pool, eligibility)
        ahead_priorities: list[int] = []  # priorities of unplaced workloads earlier in order

        for w in self._order(pending, book):
            if blocked_by is not None:
                result.pending_reasons[w.job_id] = (
                    f"waiting behind {blocked_by.name} ({blocked_by.job_id}): FIFO starts nothing before its head")
                continue
            models, refusal = self._admissible(w, pool, book)
            if models is not None and not models:
                assert refusal is not None
                result.pending_reasons[w.job_id] = refusal.reason
                unplaced.append((w, models, refusal))
                ahead_priorities.append(w.priority)
                continue
            placement = placer.place(w, models, exclude=reservation.nodes if reservation else None)
            if placement is None and reservation is not None and w.estimated_duration_s is not None \
                    and now + w.estimated_duration_s <= reservation.start:
                placement = placer.place(w, models)  # ends before the head starts: may use its nodes
            if placement is not None:
                result.placements.append(placement)
                book.charge(w.queue, placement, nodes)
                holding.append((estimated_end(now, w.estimated_duration_s), placement))
                continue
            ahead = sum(1 for p in ahead_priorities if p > w.priority)
            reason = ""
            if reservation is not None:
                trial = placer.place(w, models)
                if trial is not None:
                    pool.give_back_placement(trial)
                    start = "an unknown time" if math.isinf(reservation.start) else f"t={reservation.start:.0f}"
                    reason = (f"would delay {reservation.name} ({reservation.job_id}), reserved to start at {start} "
                              "(EASY backfill: only jobs that end before it or avoid its nodes may start)")
            elif opts.backfill and reserve_tries < MAX_RESERVE_TRIES:
                # A head that would not fit even on an emptied pool gets no reservation; the next
                # blocked workload is tried instead, a few times per round at most.
                reserve_tries += 1
                reservation = reserve(placer, w, models, holding)
            if not reason:
                reason = explainer.capacity(w, models, ahead, opts.placement.topology)
                if reservation is not None and reservation.job_id == w.job_id:
                    when = "once running jobs without an estimate end" if math.isinf(reservation.start) \
                        else f"at t={reservation.start:.0f}"
                    reason += f"; resources reserved {when}"
            result.pending_reasons[w.job_id] = reason
            unplaced.append((w, models, None))
            ahead_priorities.append(w.priority)
            if opts.strict_fifo and not opts.backfill:
                blocked_by = w

        if opts.preemption:
            self._preempt(inp, unplaced, placer, book, nodes, result, admissible)
        return result

    def _admissible(self, w: Workload, pool: Pool, book: QuotaBook) -> tuple[list[str] | None, QuotaVerdict | None]:
        demand = w.total_gpu_milli
        if not self.options.quota or demand == 0 or book.unlimited(w.queue):
            return None, None
        wanted: set[str] = set()
        for ps in w.pod_sets:
            if ps.request.wants_gpu:
                wanted.update(m for m in pool.models if not ps.request.gpu_models or m in ps.request.gpu_models)
        if not wanted:
            return None, None  # no node offers an acceptable model: placement explains it
        ok, refused = admissible_models(book, w.queue, sorted(wanted), demand)
        if ok:
            return ok, None
        reclaimable = [v for v in refused if v.reclaimable]
        return ok, (reclaimable or refused)[0]

    def _preempt(self, inp: SchedulingInput, unplaced: list[tuple[Workload, list[str] | None, QuotaVerdict | None]],
                 placer: Placer, book: QuotaBook, nodes: Mapping[str, Node], result: SchedulingResult,
                 admissible: Callable[[Workload], list[str] | None]) -> None:
        taken: set[str] = set()
        tried = 0
        lowest = min((r.workload.priority for r in inp.running), default=None)
        # Highest priority first (stable: scheduling order among equals).
        for w, _models, _refusal in sorted(unplaced, key=lambda u: -u[0].priority):
            if tried >= self.options.max_preemptors or lowest is None or w.priority <= lowest:
                break
            tried += 1
            victims = select_victims(w, inp.running, taken, placer, book, nodes, admissible)
            if not victims:
                continue
            names = []
            for r, rule in victims:
                taken.add(r.workload.job_id)
                names.append(r.workload.name)
                result.preemptions.append(Preemption(
                    r.workload.job_id,
                    f"preempted for {w.name} ({w.job_id}, priority {w.priority} > {r.workload.priority}): {rule}",
                ))
            result.pending_reasons[w.job_id] = (
                f"preempting {len(victims)} job(s) of lower priority to make room ({', '.join(names)}); "
                "starts once they have stopped")

