"""Preemption: which running workloads to stop so that a blocked one fits.

Who may be a victim of beneficiary ``X``:

* **Reclaim, regardless of priority** (Kueue's ``reclaimWithinCohort: Any``): when ``X``'s queue
  would still be within its own nominal quota of a model after admitting ``X``, any workload of a
  queue of the same cohort that *borrows* that model (uses more than its nominal quota of it) may
  be stopped, whatever the two priorities. A victim is only taken while its queue still borrows,
  so a reclaim never pushes the lender below what it lent nor the borrower below its own nominal
  quota by more than the last victim's size. Every reclaim strictly lowers the cohort's total
  borrowed amount while the reclaiming queue stays within nominal, so on a frozen pool the
  reclaims end (no loop of two queues taking quota from each other).
  A workload that started only after waiting past the starvation threshold (``starved_s``) is
  exempt from reclaim by equal or lower priority.
* **Aging**: a beneficiary that has waited past the policy's starvation threshold may preempt work
  of equal or lower priority *submitted after it*, in its own queue, in a queue without quota, or
  in a queue of its cohort that borrows. Submission order is a strict total order, so these
  preemptions cannot form a cycle either (and a victim of it never starves its beneficiary back).
* Otherwise the victim must have **strictly lower priority** than ``X``, and one of: it is in
  ``X``'s own queue; or its queue borrows in ``X``'s cohort; or its queue has no quota (best
  effort); or its queue is a ``batch`` queue and ``X``'s is not (batch work yields to training and
  inference anywhere). Priority is a strict order, so such a chain A -> B -> ... -> A is impossible.

So an admitted run of a ``training`` (reserved) or ``inference`` queue *within its quota* is never
preempted by another queue, and never by lower or equal priority; only quota it borrowed is
taken back.

Victims are chosen greedily in order of cost: lowest priority first, then least checkpoint loss
(most recent ``last_checkpoint_at``, else start time), then youngest; then the set is pruned,
dearest first, of every victim the beneficiary fits without (fewest victims). The beneficiary is
not placed in the same round: its victims must first be checkpointed and stopped by the job
controller; the room they leave is kept for it in the rest of the round.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from modelplane.core.node import Node
from modelplane.core.queue import QueueKind
from modelplane.core.workload import Workload
from modelplane.scheduler.interface import RunningWorkload
from modelplane.scheduler.placement import Placer
from modelplane.scheduler.quota import QuotaBook

MAX_VICTIM_CANDIDATES = 64


def victim_cost(r: RunningWorkload) -> tuple[int, float, float, str]:
    """Sort key, cheapest victim first."""
    checkpoint = r.last_checkpoint_at if r.last_checkpoint_at is not None else r.started_at
    return (r.workload.priority, -checkpoint, -r.started_at, r.workload.job_id)


def reclaim_models(x: Workload, book: QuotaBook, models: Collection[str]) -> frozenset[str]:
    """Models (of ``models``) on which ``x``'s queue stays within its nominal quota with ``x`` admitted."""
    xq = book.queues.get(x.queue)
    if xq is None or not xq.cohort:
        return frozenset()
    demand = x.total_gpu_milli
    if demand <= 0:
        return frozenset()
    return frozenset(m for m in models if book.within_nominal(x.queue, m, demand))


def _borrowed_models(victim: Workload, book: QuotaBook, models: Collection[str]) -> list[str]:
    return sorted(m for m in models if book.borrowing(victim.queue, book.key_for(victim.queue, m)))


def submitted_before(a: Workload, b: Workload) -> bool:
    return (a.created_at, a.job_id) < (b.created_at, b.job_id)


def preemption_rule(
    x: Workload, victim: Workload, book: QuotaBook, reclaim: Collection[str] = (), starving: bool = False
) -> str | None:
    """Why ``victim`` may be preempted for ``x``, or None when it may not.

    ``reclaim`` are the models on which ``x``'s queue reclaims its nominal quota (``reclaim_models``);
    ``starving``: ``x`` has waited past the policy's starvation threshold.
    """
    queues = book.queues
    vq = queues.get(victim.queue)
    xq = queues.get(x.queue)
    same_cohort = xq is not None and vq is not None and bool(xq.cohort) and xq.cohort == vq.cohort
    if reclaim and same_cohort and victim.queue != x.queue and not book.unlimited(victim.queue):
        borrowed = _borrowed_models(victim, book, reclaim)
        if borrowed:
            assert xq is not None
            return (
                f"reclaim: queue {victim.queue} borrows {', '.join(borrowed)} from cohort {xq.cohort}; "
                f"queue {x.queue} takes back its nominal quota"
            )
    if starving and victim.priority <= x.priority and submitted_before(x, victim):
        # A training queue is reserved: its admitted runs keep their resources against equal
        # priority, however long another job has waited (they yield to higher priority, and what
        # they borrow is still taken back below).
        reserved = vq is not None and vq.kind is QueueKind.TRAINING and victim.priority == x.priority
        if victim.queue == x.queue and not reserved:
            return f"aging: {x.job_id} starves in queue {x.queue}; {victim.job_id} was submitted after it"
        if (vq is None or book.unlimited(victim.queue)) and not reserved:
            return f"aging: {x.job_id} starves; queue {victim.queue} has no quota"
        if same_cohort and any(book.borrowing(victim.queue, k) for k in book.usage.get(victim.queue, {})):
            assert xq is not None
            return (
                f"aging: {x.job_id} starves; {victim.job_id}, submitted after it, borrows from "
                f"cohort {xq.cohort}"
            )
    if victim.priority >= x.priority:
        return None
    if victim.queue == x.queue:
        return f"same queue {x.queue}, lower priority"
    if vq is None or book.unlimited(victim.queue):
        return f"queue {victim.queue} has no quota"
    if same_cohort:
        assert xq is not None
        borrowed = [k for k in book.usage.get(victim.queue, {}) if book.borrowing(victim.queue, k)]
        if borrowed:
            return f"borrowing: queue {victim.queue} borrows {', '.join(sorted(borrowed))} from cohort {xq.cohort}"
    if vq.kind is QueueKind.BATCH and (xq is None or xq.kind is not QueueKind.BATCH):
        return f"batch queue {victim.queue} yields to {xq.kind.value if xq else 'other'} work"
    return None


def is_reclaim(rule: str) -> bool:
    return rule.startswith("reclaim")


def wanted_models(x: Workload, pool_models: Collection[str]) -> list[str]:
    """Accelerator models of the pool that ``x``'s GPU tasks accept."""
    out: set[str] = set()
    for ps in x.pod_sets:
        if ps.request.wants_gpu:
            out.update(m for m in pool_models if not ps.request.gpu_models or m in ps.request.gpu_models)
    return sorted(out)


def select_victims(
    x: Workload,
    running: Sequence[RunningWorkload],
    taken: Collection[str],
    placer: Placer,
    book: QuotaBook,
    nodes: Mapping[str, Node],
    admissible: Callable[[Workload], list[str] | None],
    starved_s: float | None = None,
    starving: bool = False,
    prefer_nodes: Collection[str] = (),
) -> list[tuple[RunningWorkload, str]] | None:
    """Victims (with the rule that allows each) that make ``x`` fit, or None when none do.

    ``starved_s``: a running workload that waited at least this long before it started (the
    policy's starvation threshold) is not reclaimed from below its priority: the aging that got it
    started must not be undone by the next reclaim. Strictly higher priority may still preempt it.

    ``starving``: ``x`` waited past that threshold and may preempt work of no higher priority
    submitted after it (the aging rule above); ``prefer_nodes``: victims on these nodes (``x``'s
    reservation) are taken first, so that its reserved room is what gets freed.

    On success the pool and the quota book are left as if the victims had stopped and ``x`` had
    taken their room, so the rest of the round counts on neither; on failure both are unchanged.
    ``admissible`` gives the models ``x``'s quota admits ([] = none, None = any).
    """
    pool = placer.pool
    eligible_nodes: set[str] = set()
    for ps in x.pod_sets:
        eligible_nodes.update(pool.nodes[i].name for i in placer.eligibility.of(ps).indices)
    reclaim = reclaim_models(x, book, wanted_models(x, pool.models))
    cands: list[tuple[RunningWorkload, str]] = []
    preferred = frozenset(prefer_nodes)

    def cost(r: RunningWorkload) -> tuple[bool, tuple[int, float, float, str]]:
        return not any(a.node in preferred for a in r.placement.assignments), victim_cost(r)

    for r in sorted(running, key=cost):
        if r.workload.job_id in taken:
            continue
        rule = preemption_rule(x, r.workload, book, reclaim, starving)
        if rule is None:
            continue
        if (
            starved_s is not None
            and r.workload.priority >= x.priority
            and r.started_at - r.workload.created_at >= starved_s
        ):
            continue
        if not any(a.node in eligible_nodes for a in r.placement.assignments) and not rule.startswith(
            ("reclaim", "borrowing", "same")
        ):
            continue
        cands.append((r, rule))
        if len(cands) >= MAX_VICTIM_CANDIDATES:
            break
    if not cands:
        return None

    def still_allowed(r: RunningWorkload, rule: str) -> bool:
        """A reclaim victim only while its queue still borrows (earlier victims may have ended that)."""
        if not is_reclaim(rule) or r.workload.priority < x.priority:
            return True
        return bool(_borrowed_models(r.workload, book, reclaim))

    def remove(r: RunningWorkload) -> None:
        pool.give_back_placement(r.placement)
        book.charge(r.workload.queue, r.placement, nodes, -1)

    def restore(r: RunningWorkload) -> None:
        pool.take_placement(r.placement)
        book.charge(r.workload.queue, r.placement, nodes, +1)

    def fits() -> bool:
        models = admissible(x)
        if models is not None and not models:
            return False
        p = placer.place(x, models)
        if p is None:
            return False
        pool.give_back_placement(p)
        return True

    removed: list[tuple[RunningWorkload, str]] = []
    ok = False
    for c in cands:
        if not still_allowed(*c):
            continue
        remove(c[0])
        removed.append(c)
        if fits():
            ok = True
            break
    if not ok:
        for r, _ in reversed(removed):
            restore(r)
        return None
    victims: list[tuple[RunningWorkload, str]] = []
    for c in reversed(removed):  # dearest first: keep every victim x can do without
        restore(c[0])
        if fits():
            continue
        remove(c[0])
        victims.append(c)
    victims.reverse()
    if not victims:
        return None  # x fits without preempting anyone (it waits on a backfill reservation)
    # Keep x's room for the rest of the round.
    models = admissible(x)
    p = placer.place(x, models)
    if p is not None:
        book.charge(x.queue, p, nodes, +1)
    return victims
