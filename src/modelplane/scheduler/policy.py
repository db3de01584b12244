"""The default scheduling policy: admission, ordering, placement, backfill, preemption, reasons.

One round, over a snapshot (``SchedulingInput``), never touching the clock or the store:

1. **Order.** ``fair`` (default): queues take turns by weighted dominant share (see ``quota.py``),
   each queue's workloads by priority, then (``size_order``) smallest GPU-seconds first (SRTF /
   Tiresias-like, from the runtime estimates), then submission time. ``priority``: all pending by priority,
   then submission time. ``fifo``: by submission time only. ``sjf``: shortest runtime estimate
   first (unknown estimates last), for SJF/SRTF-style baselines. On top of that, in this order:
   workloads that preempted last round (their victims' room is theirs), then *starving*
   workloads (pending ``starvation_s`` or more since submission; the oldest, then the others
   smallest GPU-seconds first: ``starving_order``), then the rest, where, for ``fair`` and
   ``priority``, workloads their queue can admit within its nominal quota go before those that
   would have to borrow (Kueue's rule; it also keeps a reclaim from being undone by the next
   borrower). The borrowers then go smallest GPU-seconds first whatever their queue
   (``borrow_order``): fair share decides who gets the nominal quota, which each queue is
   guaranteed and may reclaim; quota lent is idle capacity on loan, taken back at will, and handing
   it to the shortest work first is what lowers the mean wait most (SJF). Ordered by fair share, it
   went to the queues of few, huge jobs (low share) while a queue of thousands of 1-GPU jobs, above
   its nominal quota during a burst, waited behind them (philly-2017, day 35: 87% of all waiting).
2. **Admission.** The workload's queue must have quota for its whole accelerator demand on some
   model (``quota.py``: nominal quota, cohort borrowing within limits); placement then only uses
   the admitted models. Quota refusals never block the workloads behind.
3. **Placement** (``placement.py``): filters, then scores; gangs all-or-nothing, topology-aware.
4. **Backfill** (``backfill.py``): the first workload that finds no room gets an EASY reservation;
   the others start only where they cannot delay it (with ``backfill_each_reservation``, each
   reservation is checked on its own nodes; with ``reservation_spare``, work running
   past the start may also use what a reserved node has spare then). Every starving workload
   gets a reservation too (even while its queue waits on the cohort for quota; the oldest first),
   so a large job is no longer passed over forever by smaller ones: it has a guaranteed start
   time. Without backfill,
   ``strict_fifo`` makes a blocked head stop every workload behind it (classic FIFO); otherwise
   they are tried greedily.
5. **Preemption** (``preemption.py``): blocked workloads (by room, or by reclaimable quota) may
   preempt strictly lower-priority work under the rules given there, and reclaim their queue's
   nominal quota from borrowers of the cohort whatever their priority; a starving workload may
   also preempt work of no higher priority submitted after it (aging); no cycles are possible.
   No preemption at all when the running workloads' estimates say the room and quota come back
   by themselves within ``preempt_grace_s``.

6. **Why pending** (``explain.py``): every workload not placed gets a one-line reason.

Aging, in short: the effective order is (nominated, the oldest starving, the other starving by
size, the policy's order); the
starvation threshold bounds how long the priority, size and fair-share order may pass a workload
over. A workload's wait is counted from its submission, or from its last preemption by this
scheduler (a requeued run already had service; counted from submission it "starved" the moment it
was requeued and preempted others in turn). Measured on philly-2017 windows in
``benchmarks/philly_queues.py`` (see its docstring for the per-window table).

Priority is ``Workload.priority`` (``core/priority.py``: task type, size, deadline, queue priority),
higher first. Queue kinds: ``training`` runs are reserved (while within quota, never preempted
by lower priority, nor by other queues; equal priority only through aging, by a starving job of
the same queue submitted earlier; a run on borrowed quota is reclaimed whatever its priority);
``inference`` is elastic (replicas are placed
like any workload; scaling is the autoscaler's job); ``batch`` is preemptible by the other kinds.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from modelplane.core.node import Node
from modelplane.core.placement import Placement
from modelplane.core.workload import TaskRequest, Workload
from modelplane.scheduler.backfill import Reservation, Reservations, estimated_end, reserve
from modelplane.scheduler.explain import Explainer
from modelplane.scheduler.filters import Eligibility
from modelplane.scheduler.interface import Preemption, SchedulingInput, SchedulingResult
from modelplane.scheduler.placement import PlacementOptions, Placer
from modelplane.scheduler.pool import Pool
from modelplane.scheduler.preemption import reclaim_models, select_victims, wanted_models
from modelplane.scheduler.quota import QuotaBook, QuotaVerdict, admissible_models
from modelplane.scheduler.scoring import NodeScorer, ScoreContext

MAX_RESERVE_TRIES = 4
ORDERS = ("fair", "priority", "fifo", "sjf")
BORROW_ORDERS = ("size", "fair")
STARVING_ORDERS = ("size", "age")


@dataclass(frozen=True)
class PolicyOptions:
    order: str = "fair"
    quota: bool = True
    backfill: bool = True
    strict_fifo: bool = False
    # Among equal priority, smallest GPU-seconds first (SRTF / Tiresias-like; needs runtime
    # estimates, unknown ones go last), else submission order. Aging (``starvation_s``) bounds how
    # long a large job is passed over.
    size_order: bool = True
    # Order in which idle (lent) quota of the cohort is handed out to workloads that must borrow:
    # ``size`` (default): smallest GPU-seconds first across all queues (priority first); ``fair``:
    # the fair-share order, as for nominal quota. See ``PolicyScheduler._nominal_first``.
    borrow_order: str = "size"
    preemption: bool = True
    max_preemptors: int = 8  # blocked workloads that may preempt per round (bounds the work)
    # A blocked workload preempts (or reclaims) only if the room and quota it needs would not come
    # back by themselves within this many seconds, as far as the running workloads' estimates tell.
    # A preemption costs its victims a checkpoint and a restart; one that saves the beneficiary a
    # minute is pure loss (on philly-2017 it was most of them: a 16-GPU borrower stopped to admit
    # one 1-GPU job, and re-admitted a round later). 0 preempts at once, as Kueue does.
    preempt_grace_s: float = 600.0
    # Starvation guard (aging): a workload pending this long since submission goes before every
    # other (oldest first) and gets the round's EASY reservation, even while its queue waits on the
    # cohort to have quota to lend; None turns it off. Only with ``backfill``.
    starvation_s: float | None = 10 * 3600.0
    # True: a reservation holds only the devices, CPU and memory its workload will take at its
    # start; the rest of a reserved node may go to work that runs past the start (``backfill.py``).
    # False (default): reserved nodes are held whole (only work ending before the start may use
    # them). Off by default as measured: on philly-2017 it left the mean where it was (day 35: 0.32
    # of FIFO's either way) and raised the longest wait past FIFO's (0.94 -> 1.20 of it).
    reservation_spare: bool = False
    # True: work that ends before a reservation starts may use that reservation's nodes even when it
    # runs past an earlier reservation elsewhere (each reservation checked on its own, as in
    # conservative backfill; it still delays none). False (default): only work ending before the
    # earliest reservation may use reserved nodes. Off as measured on philly-2017 (ours / FIFO, mean
    # p99 max): day 49 0.046 0.45 0.76 (0.048 0.47 0.87 off), day 42 0.129 0.38 0.57 (0.122 0.35
    # 0.62 off), days 14, 21, 28, 56 unchanged, but day 35 0.362 0.71 0.95 (0.321 0.61 0.94 off):
    # past the mean goal of 0.35.
    backfill_each_reservation: bool = False
    max_starving_reservations: int = 8  # bounds the work per round; the oldest starving workloads first
    # Order among starving workloads. ``age``: oldest first. ``size`` (default): the oldest first,
    # then the others smallest GPU-seconds first. In a long overload (philly-2017 from day 35:
    # a day and a half of submissions beyond capacity) thousands of small jobs pass the threshold
    # together, and oldest-first turned the policy into FIFO delayed by the threshold, throwing away
    # the size order exactly where it matters most. The oldest still goes first and the
    # reservations still go to the oldest, so each starving workload in turn becomes the head of
    # the line and gets a guaranteed start: the wait stays bounded.
    starving_order: str = "size"
    # With ``starving_order="size"``: how many of the oldest starving workloads keep age order at
    # the head of the line (each placed, or else reserved, before any smaller starving one is
    # placed), as conservative backfill does for the starving set. 1 (default): only the oldest.
    # 8 (all that get reservations) was measured on philly-2017 and lost (ours / FIFO, mean p99
    # max): day 21 0.209 0.457 0.783 (0.174 0.423 0.783 with 1), day 42 0.157 0.415 0.656 (0.122
    # 0.349 0.623), day 14 unchanged. The longest waits of day 21 are 8-GPU gangs of a burst
    # that start one by one as whole nodes free, which earlier reservations do not bring closer;
    # only the 1-GPU work behind them waits longer.
    starving_head: int = 1
    # Task sizes FGD-like scorers measure fragmentation against; empty: the tasks pending and
    # running this round. A replay passes the trace's own distribution, as the FGD paper does.
    workload_mix: Sequence[tuple[TaskRequest, float]] = ()
    placement: PlacementOptions = field(default_factory=PlacementOptions)
    seed: int = 0


def gpu_seconds(w: Workload) -> float:
    """GPUs x runtime estimate: the work a workload asks for (inf when it has no estimate)."""
    if w.estimated_duration_s is None:
        return math.inf
    return max(w.total_gpu_milli, 1) / 1000.0 * w.estimated_duration_s


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

    def __init__(
        self, name: str = "default", options: PolicyOptions | None = None, scorer: NodeScorer | None = None
    ) -> None:
        self.name = name
        self.options = options or PolicyOptions()
        self.scorer = scorer
        # Workloads that preempted last round: they go first this round, so the room their victims
        # left is theirs (Kubernetes' nominated node, in memory; a restart only loses one round's
        # head start). Without it, a workload earlier in the order could take that room, and the
        # preemptor would preempt again, round after round.
        self._nominated: set[str] = set()
        # Victims of this scheduler's preemptions, with when: a requeued run's starvation clock
        # starts at its preemption, not at its submission. Counted from submission, a run stopped
        # after days of work was "starving" the moment it was requeued, and preempted others in
        # turn (a cascade of reclaims and aging on philly-2017). In memory, like ``_nominated``:
        # after a restart the clock falls back to submission, which only ages sooner.
        self._requeued_at: dict[str, float] = {}
        if self.options.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {self.options.order!r}")
        if self.options.borrow_order not in BORROW_ORDERS:
            raise ValueError(
                f"borrow_order must be one of {', '.join(BORROW_ORDERS)}, got {self.options.borrow_order!r}"
            )
        if self.options.starving_head < 1:
            raise ValueError(f"starving_head must be at least 1, got {self.options.starving_head}")
        if self.options.starving_order not in STARVING_ORDERS:
            raise ValueError(
                f"starving_order must be one of {', '.join(STARVING_ORDERS)}, got {self.options.starving_order!r}"
            )

    # -- ordering ----------------------------------------------------------------------------------

    def _order(self, pending: Sequence[Workload], book: QuotaBook) -> Iterator[Workload]:
        if self.options.order == "fifo":
            yield from sorted(pending, key=lambda w: (w.created_at, w.job_id))
            return
        if self.options.order == "sjf":
            yield from sorted(
                pending,
                key=lambda w: (
                    w.estimated_duration_s if w.estimated_duration_s is not None else math.inf,
                    w.created_at,
                    w.job_id,
                ),
            )
            return
        by_priority = sorted(pending, key=self._line_key)
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

    def _waiting_since(self, w: Workload) -> float:
        """Start of the wait that aging measures: submission, or the last preemption of ``w``."""
        return self._requeued_at.get(w.job_id, w.created_at)

    def _line_key(self, w: Workload) -> tuple[int, float, float, str]:
        """Order of a queue's line: priority, then (``size_order``) GPU-seconds, then submission."""
        return (-w.priority, gpu_seconds(w) if self.options.size_order else 0.0, w.created_at, w.job_id)

    def _borrow_key(self, w: Workload) -> tuple[int, float, float, str]:
        """Order of the borrowers: priority, then GPU-seconds whatever the queue, then submission."""
        return (-w.priority, gpu_seconds(w), w.created_at, w.job_id)

    def _nominal_first(
        self, order: Iterable[Workload], book: QuotaBook, pool_models: Sequence[str]
    ) -> Iterator[Workload]:
        """``order``, but workloads that would have to borrow quota go after all that need not.

        As in Kueue, admission within nominal quota comes before borrowing. Without it, the room a
        reclaim frees would be taken again by the next borrower of lower share before the
        reclaiming workload gets it, round after round (a reclaim loop). Decided lazily, on the
        quota book as it stands when the workload's turn comes.
        """
        if not self.options.quota or self.options.order not in ("fair", "priority"):
            yield from order
            return
        deferred: list[Workload] = []
        for w in order:
            demand = w.total_gpu_milli
            if (
                demand > 0
                and not book.unlimited(w.queue)
                and self.queue_in_cohort(book, w.queue)
                and not any(book.within_nominal(w.queue, m, demand) for m in wanted_models(w, pool_models))
            ):
                deferred.append(w)
            else:
                yield w
        if self.options.borrow_order == "size":
            deferred.sort(key=self._borrow_key)
        yield from deferred

    @staticmethod
    def queue_in_cohort(book: QuotaBook, queue: str) -> bool:
        spec = book.queues.get(queue)
        return spec is not None and bool(spec.cohort)

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
                result.pending_reasons[w.job_id] = (
                    f"queue {w.queue!r} does not exist; create it or change spec.queue"
                )

        def admissible(w: Workload) -> list[str] | None:
            """Models the queue's quota admits for ``w`` (None: any, quota not checked)."""
            return self._admissible(w, pool, book)[0]

        reservations = Reservations()
        reserve_tries = 0
        blocked_by: Workload | None = None
        unplaced: list[tuple[Workload, list[str] | None, QuotaVerdict | None]] = []
        explainer = Explainer(pool, eligibility)
        ahead_priorities: list[int] = []  # priorities of unplaced workloads earlier in order

        last_nominated, self._nominated = self._nominated, set()
        nominated = sorted(
            (w for w in pending if w.job_id in last_nominated),
            key=lambda w: (-w.priority, w.created_at, w.job_id),
        )
        live = {w.job_id for w in pending} | {r.workload.job_id for r in inp.running}
        self._requeued_at = {j: t for j, t in self._requeued_at.items() if j in live}
        starving_ids: set[str] = set()
        if opts.backfill and opts.starvation_s is not None:
            starving_ids = {
                w.job_id
                for w in pending
                if now - self._waiting_since(w) >= opts.starvation_s and w.job_id not in last_nominated
            }
        starving = sorted(
            (w for w in pending if w.job_id in starving_ids), key=lambda w: (self._waiting_since(w), w.job_id)
        )
        reservable: Collection[str] = starving_ids
        if opts.starving_order == "size" and starving:
            # The oldest keeps the head of the line (and the first reservation); the others go
            # smallest first, and the reservations left go to the oldest of them (see PolicyOptions).
            reservable = {w.job_id for w in starving[: opts.max_starving_reservations]}
            aged = opts.starving_head
            starving = starving[:aged] + sorted(
                starving[aged:], key=lambda w: (-w.priority, gpu_seconds(w), self._waiting_since(w), w.job_id)
            )
        starving_reserved = 0
        first = last_nominated | starving_ids
        rest = (w for w in self._order(pending, book) if w.job_id not in first)

        def reserve_starving(
            w: Workload, models: list[str] | None, whole: bool = False
        ) -> Reservation | None:
            nonlocal starving_reserved
            if w.job_id not in reservable or starving_reserved >= opts.max_starving_reservations:
                return None
            starving_reserved += 1
            mine = reserve(placer, w, models, holding, exclude=reservations.nodes)
            if mine is not None and whole:
                mine = replace(mine, spare={})
            return reservations.add(mine)

        for w in itertools.chain(nominated, starving, self._nominal_first(rest, book, pool.models)):
            if blocked_by is not None:
                result.pending_reasons[w.job_id] = (
                    f"waiting behind {blocked_by.name} ({blocked_by.job_id}): FIFO starts nothing before its head"
                )
                continue
            models, refusal = self._admissible(w, pool, book)
            if models is not None and not models:
                assert refusal is not None
                result.pending_reasons[w.job_id] = refusal.reason
                if refusal.cohort_full:
                    # Starving, and only the cohort's current use keeps it out: hold nodes for it
                    # so that the quota frees up with them instead of being taken again. Held
                    # whole: what would be spare on them is the very quota it waits for (lent to
                    # long backfill, it starved past FIFO's worst wait on philly-2017, day 35).
                    mine = reserve_starving(w, wanted_models(w, pool.models), whole=True)
                    if mine is not None:
                        start = "an unknown time" if math.isinf(mine.start) else f"t={mine.start:.0f}"
                        result.pending_reasons[w.job_id] += (
                            f"; waiting since t={self._waiting_since(w):.0f}: resources reserved at {start}"
                        )
                unplaced.append((w, models, refusal))
                ahead_priorities.append(w.priority)
                continue
            placement = placer.place(w, models, exclude=reservations.nodes or None)
            if placement is None and reservations:
                end = estimated_end(now, w.estimated_duration_s)
                if opts.backfill_each_reservation:
                    before = reservations.nodes_starting_before(end)
                else:
                    ends_first = w.estimated_duration_s is not None and end <= reservations.start
                    before = frozenset() if ends_first else reservations.nodes
                if before != reservations.nodes:
                    # ends before some reservations start: may use their nodes (not the others')
                    placement = placer.place(w, models, exclude=before or None)
                if placement is None and opts.reservation_spare and before:
                    # Runs past a reservation's start: only what the reserved nodes have spare then.
                    held = reservations.hold(pool)
                    try:
                        placement = placer.place(w, models)
                    finally:
                        reservations.release(pool, held)
                    if placement is not None:
                        reservations.consume(placement, pool)
            if placement is not None:
                result.placements.append(placement)
                book.charge(w.queue, placement, nodes)
                holding.append((estimated_end(now, w.estimated_duration_s), placement))
                continue
            ahead = sum(1 for p in ahead_priorities if p > w.priority)
            reason = ""
            if w.job_id in starving_ids:
                reserve_starving(w, models)
            elif reservations:
                trial = placer.place(w, models)
                if trial is not None:
                    pool.give_back_placement(trial)
                    head = reservations.first
                    start = "an unknown time" if math.isinf(head.start) else f"t={head.start:.0f}"
                    reason = (
                        f"would delay {head.name} ({head.job_id}), reserved to start at {start} "
                        "(EASY backfill: only jobs that end before it or avoid its nodes may start)"
                    )
            elif opts.backfill and reserve_tries < MAX_RESERVE_TRIES:
                # A head that would not fit even on an emptied pool gets no reservation; the next
                # blocked workload is tried instead, a few times per round at most.
                reserve_tries += 1
                reservations.add(reserve(placer, w, models, holding))
            if not reason:
                reason = explainer.capacity(w, models, ahead, opts.placement.topology)
                mine = reservations.of(w.job_id)
                if mine is not None:
                    when = (
                        "once running jobs without an estimate end"
                        if math.isinf(mine.start)
                        else f"at t={mine.start:.0f}"
                    )
                    reason += f"; resources reserved {when}"
            result.pending_reasons[w.job_id] = reason
            unplaced.append((w, models, None))
            ahead_priorities.append(w.priority)
            if opts.strict_fifo and not opts.backfill:
                blocked_by = w

        for p in result.placements:
            self._requeued_at.pop(p.job_id, None)
        if opts.preemption:
            reserved_nodes = {r.job_id: [pool.nodes[i].name for i in r.nodes] for r in reservations.items}
            self._preempt(
                inp, unplaced, placer, book, nodes, result, admissible, starving_ids, reserved_nodes
            )
        return result

    def _admissible(
        self, w: Workload, pool: Pool, book: QuotaBook
    ) -> tuple[list[str] | None, QuotaVerdict | None]:
        demand = w.total_gpu_milli
        if not self.options.quota or demand == 0 or book.unlimited(w.queue):
            return None, None
        wanted: set[str] = set()
        for ps in w.pod_sets:
            if ps.request.wants_gpu:
                wanted.update(
                    m for m in pool.models if not ps.request.gpu_models or m in ps.request.gpu_models
                )
        if not wanted:
            return None, None  # no node offers an acceptable model: placement explains it
        ok, refused = admissible_models(book, w.queue, sorted(wanted), demand)
        if ok:
            return ok, None
        reclaimable = [v for v in refused if v.reclaimable]
        return ok, (reclaimable or refused)[0]

    def _frees_soon(
        self,
        w: Workload,
        inp: SchedulingInput,
        placer: Placer,
        book: QuotaBook,
        nodes: Mapping[str, Node],
        admissible: Callable[[Workload], list[str] | None],
        taken: Collection[str],
    ) -> bool:
        """Would ``w`` be admitted and fit once the workloads estimated to end within the grace end?

        Tried on the round's pool and quota book, with those workloads released, then restored.
        """
        grace = self.options.preempt_grace_s
        if grace <= 0:
            return False
        horizon = inp.now + grace
        ending = [
            r
            for r in inp.running
            if r.workload.job_id not in taken
            and estimated_end(r.started_at, r.workload.estimated_duration_s) <= horizon
        ]
        if not ending:
            return False
        pool = placer.pool
        for r in ending:
            pool.give_back_placement(r.placement)
            if r.workload.queue in book.queues:
                book.charge(r.workload.queue, r.placement, nodes, -1)
        try:
            models = admissible(w)
            if models is not None and not models:
                return False
            p = placer.place(w, models)
            if p is None:
                return False
            pool.give_back_placement(p)
            return True
        finally:
            for r in reversed(ending):
                pool.take_placement(r.placement)
                if r.workload.queue in book.queues:
                    book.charge(r.workload.queue, r.placement, nodes, +1)

    def _preempt(
        self,
        inp: SchedulingInput,
        unplaced: list[tuple[Workload, list[str] | None, QuotaVerdict | None]],
        placer: Placer,
        book: QuotaBook,
        nodes: Mapping[str, Node],
        result: SchedulingResult,
        admissible: Callable[[Workload], list[str] | None],
        starving: Collection[str] = (),
        reserved_nodes: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        taken: set[str] = set()
        tried = 0
        lowest = min((r.workload.priority for r in inp.running), default=None)
        if lowest is None:
            return
        pool_models = placer.pool.models
        # Reclaims of nominal quota first (whatever their priority: a queue within its quota does not
        # wait behind borrowers trying their luck), then starving workloads (oldest first), then
        # highest priority first; stable, so the scheduling order decides among equals.
        reclaiming = {
            u[0].job_id for u in unplaced if reclaim_models(u[0], book, wanted_models(u[0], pool_models))
        }
        order = sorted(
            unplaced,
            key=lambda u: (
                u[0].job_id not in reclaiming,
                u[0].job_id not in starving,
                self._waiting_since(u[0]) if u[0].job_id in starving else 0.0,
                -u[0].priority,
            ),
        )
        for w, _models, _refusal in order:
            if tried >= self.options.max_preemptors:
                break
            if w.priority <= lowest and w.job_id not in reclaiming and w.job_id not in starving:
                continue
            if self._frees_soon(w, inp, placer, book, nodes, admissible, taken):
                result.pending_reasons[w.job_id] = result.pending_reasons.get(w.job_id, "") + (
                    f"; no preemption: running jobs free its room within {self.options.preempt_grace_s:.0f} s"
                )
                continue
            tried += 1
            victims = select_victims(
                w,
                inp.running,
                taken,
                placer,
                book,
                nodes,
                admissible,
                starved_s=self.options.starvation_s if self.options.backfill else None,
                starving=w.job_id in starving,
                prefer_nodes=(reserved_nodes or {}).get(w.job_id, ()),
            )
            if not victims:
                continue
            names = []
            for r, rule in victims:
                taken.add(r.workload.job_id)
                self._requeued_at[r.workload.job_id] = inp.now
                names.append(r.workload.name)
                op = ">" if w.priority > r.workload.priority else "<="
                result.preemptions.append(
                    Preemption(
                        r.workload.job_id,
                        f"preempted for {w.name} ({w.job_id}, priority {w.priority} {op} {r.workload.priority}): {rule}",
                    )
                )
            what = (
                "of lower priority"
                if all(r.workload.priority < w.priority for r, _ in victims)
                else "submitted after it (it has waited too long)"
                if w.job_id in starving
                else "borrowing its queue's quota"
            )
            self._nominated.add(w.job_id)
            result.pending_reasons[w.job_id] = (
                f"preempting {len(victims)} job(s) {what} to make room ({', '.join(names)}); "
                "starts once they have stopped"
            )
