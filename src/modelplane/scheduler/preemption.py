"""Preemption: which running workloads to stop so that a blocked one of higher priority fits.

Who may be a victim of beneficiary ``X`` (all conditions on top of the first):

* **strictly lower priority** than ``X``: always required. Priority is a strict order, so
  "A preempts B" implies prio(A) > prio(B), and a chain A -> B -> ... -> A is impossible: a workload
  preempted to make room for ``X`` can never preempt ``X`` back (no preemption cycles);
* and one of: it is in ``X``'s own queue; or its queue borrows over its nominal quota in ``X``'s
  cohort (reclaim of lent quota); or its queue has no quota (best effort); or its queue is a
  ``batch`` queue and ``X``'s is not (batch work yields to training and inference anywhere).

So an admitted run of a ``training`` (reserved) or ``inference`` queue within its quota is never
preempted by another queue, and never by lower or equal priority.

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


def preemption_rule(x: Workload, victim: Workload, book: QuotaBook) -> str | None:
    """Why ``victim`` may be preempted for ``x``, or None when it may not."""
    if victim.priority >= x.priority:
        return None
    if victim.queue == x.queue:
        return f"same queue {x.queue}, lower priority"
    queues = book.queues
    vq = queues.get(victim.queue)
    xq = queues.get(x.queue)
    if vq is None or book.unlimited(victim.queue):
        return f"queue {victim.queue} has no quota"
    if xq is not None and xq.cohort and xq.cohort == vq.cohort:
        borrowed = [k for k in book.usage.get(victim.queue, {}) if book.borrowing(victim.queue, k)]
        if borrowed:
            return f"reclaim: queue {victim.queue} borrows {', '.join(sorted(borrowed))} from cohort {xq.cohort}"
    if vq.kind is QueueKind.BATCH and (xq is None or xq.kind is not QueueKind.BATCH):
        return f"batch queue {victim.queue} yields to {xq.kind.value if xq else 'other'} work"
    return None


def select_victims(
    x: Workload,
    running: Sequence[RunningWorkload],
    taken: Collection[str],
    placer: Placer,
    book: QuotaBook,
    nodes: Mapping[str, Node],
    admissible: Callable[[Workload], list[str] | None],
) -> list[tuple[RunningWorkload, str]] | None:
    """Victims (with the rule that allows each) that make ``x`` fit, or None when none do.

    On success the pool and the quota book are left as if the victims had stopped and ``x`` had
    taken their room, so the rest of the round counts on neither; on failure both are unchanged.
    ``admissible`` gives the models ``x``'s quota admits ([] = none, None = any).
    """
    pool = placer.pool
    eligible_nodes: set[str] = set()
    for ps in x.pod_sets:
        eligible_nodes.update(pool.nodes[i].name for i in placer.eligibility.of(ps).indices)
    cands: list[tuple[RunningWorkload, str]] = []
    for r in sorted(running, key=victim_cost):
        if r.workload.job_id in taken:
            continue
        rule = preemption_rule(x, r.workload, book)
        if rule is None:
            continue
        if not any(a.node in eligible_nodes for a in r.placement.assignments) and not rule.startswith(("reclaim", "same")):
            continue
        cands.append((r, rule))
        if len(cands) >= MAX_VICTIM_CANDIDATES:
            break
    if not cands:
        return None

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
