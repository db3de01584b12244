"""Starvation guard (aging), exact EASY reservations, and the preemptor's head start next round."""

from __future__ import annotations

import pytest

from modelplane.core.placement import Placement, TaskAssignment
from modelplane.core.workload import Workload
from modelplane.scheduler.backfill import reserve
from modelplane.scheduler.filters import Eligibility
from modelplane.scheduler.interface import RunningWorkload, SchedulingInput, SchedulingResult
from modelplane.scheduler.placement import PlacementOptions, Placer
from modelplane.scheduler.policy import PolicyOptions, PolicyScheduler
from modelplane.scheduler.pool import Pool
from modelplane.scheduler.scoring import ScoreContext
from tests.scheduler.factories import TinyScorer, node, queue, request, running, workload

STARVE = 1000.0


def on(w: Workload, node_name: str, devices: tuple[int, ...]) -> Placement:
    r = w.pod_sets[0].request
    return Placement(
        w.job_id, (TaskAssignment("worker", 0, 0, node_name, r.cpu_milli, r.memory_mib, devices, 1000),)
    )


def sched(**options: object) -> PolicyScheduler:
    return PolicyScheduler("t", PolicyOptions(**{"starvation_s": STARVE, **options}), TinyScorer())  # type: ignore[arg-type]


def run(s: PolicyScheduler, nodes, queues, holding, pending, now: float) -> SchedulingResult:  # type: ignore[no-untyped-def]
    return s.schedule(SchedulingInput(nodes, queues, holding, pending, now))


def cohort() -> dict:  # type: ignore[type-arg]
    return {"big": queue("big", {"*": 4}, cohort="c"), "small": queue("small", {"*": 12}, cohort="c")}


def test_starving_job_passes_the_fair_order_and_holds_a_reservation() -> None:
    # 'big' (quota 4) wants a whole node: it must borrow, and 'small' uses its whole quota of the
    # cohort, so there is nothing to lend. Not starving, 'big' is refused and the next job takes the
    # free room; starving, it goes first and the node that frees first is held for it.
    nodes = [node("a"), node("b")]
    s1 = workload("s1", req=request(4), queue="small", est=500)
    s2 = workload("s2", req=request(8), queue="small", est=800)
    holding = [running(s1, on(s1, "a", (0, 1, 2, 3))), running(s2, on(s2, "b", tuple(range(8))))]
    big = workload("big", req=request(8), queue="big", created_at=0, est=100)
    late = workload("late", req=request(4), queue="small", created_at=1, est=10_000)
    r = run(sched(), nodes, cohort(), holding, [big, late], now=10)
    assert [p.job_id for p in r.placements] == ["late"]  # borrows the room 'big' cannot get

    r = run(sched(), nodes, cohort(), holding, [big, late], now=STARVE)
    assert r.placements == []  # 'late' would take the room 'big' is promised
    assert "resources reserved at t=500" in r.pending_reasons["big"]
    assert r.pending_reasons["late"].startswith("would delay big (big), reserved to start at t=500")


def test_starving_job_preempts_younger_work_of_equal_priority() -> None:
    nodes = [node("a")]
    queues = {"q": queue("q")}
    younger = workload("younger", req=request(8), priority=5, created_at=50)
    holding = [running(younger, on(younger, "a", tuple(range(8))), started_at=60)]
    x = workload("x", req=request(8), priority=5, created_at=0)
    assert run(sched(), nodes, queues, holding, [x], now=STARVE - 1).preemptions == []
    r = run(sched(), nodes, queues, holding, [x], now=STARVE)
    assert [p.job_id for p in r.preemptions] == ["younger"]
    assert "aging: x starves in queue q; younger was submitted after it" in r.preemptions[0].reason


def test_a_training_queue_keeps_its_runs_against_equal_priority_however_long_the_wait() -> None:
    """Reserved training queue: an admitted run is not preempted by equal priority, even by a job
    that starves; a higher-priority job still may."""
    nodes = [node("a")]
    queues = {"q": queue("q", kind="training")}
    younger = workload("younger", req=request(8), priority=5, created_at=50)
    holding = [running(younger, on(younger, "a", tuple(range(8))), started_at=60)]
    x = workload("x", req=request(8), priority=5, created_at=0)
    assert run(sched(), nodes, queues, holding, [x], now=10 * STARVE).preemptions == []
    urgent = workload("urgent", req=request(8), priority=9, created_at=0)
    assert [p.job_id for p in run(sched(), nodes, queues, holding, [urgent], now=10).preemptions] == [
        "younger"
    ]


def test_aging_never_preempts_older_work() -> None:
    nodes = [node("a")]
    queues = {"q": queue("q")}
    older = workload("older", req=request(8), priority=5, created_at=0)
    holding = [running(older, on(older, "a", tuple(range(8))), started_at=10)]
    x = workload("x", req=request(8), priority=5, created_at=5)
    assert run(sched(), nodes, queues, holding, [x], now=10 * STARVE).preemptions == []


def test_work_started_after_starving_is_not_reclaimed_by_equal_priority() -> None:
    nodes = [node("a"), node("b")]
    queues = {
        "lender": queue("lender", {"*": 8}, cohort="c"),
        "borrower": queue("borrower", {"*": 8}, cohort="c"),
    }
    b1 = workload("b1", req=request(8), queue="borrower", created_at=0)
    b2 = workload("b2", req=request(8), queue="borrower", created_at=0)
    holding = [
        running(b1, on(b1, "a", tuple(range(8))), started_at=0),
        running(b2, on(b2, "b", tuple(range(8))), started_at=2 * STARVE),
    ]  # b2 had starved
    r = run(
        sched(),
        nodes,
        queues,
        holding,
        [workload("x", req=request(8), queue="lender", created_at=2 * STARVE)],
        now=2 * STARVE + 10,
    )
    assert [p.job_id for p in r.preemptions] == ["b1"]  # the younger start would go first otherwise


def test_preemptor_gets_the_room_next_round() -> None:
    # x (queue heavy, higher priority, larger share) preempts 'low'; next round the room is free,
    # and 'y' of the lighter queue would come first in fair order, but x was nominated.
    nodes = [node("a")]
    queues = {"heavy": queue("heavy"), "light": queue("light")}
    low = workload("low", req=request(8), queue="heavy", priority=1)
    s = sched()
    x = workload("x", req=request(8), queue="heavy", priority=5, created_at=1)
    r = run(s, nodes, queues, [running(low, on(low, "a", tuple(range(8))))], [x], now=10)
    assert [p.job_id for p in r.preemptions] == ["low"]
    y = workload("y", req=request(8), queue="light", priority=5, created_at=0)
    r = run(s, nodes, queues, [], [low, x, y], now=20)
    assert [p.job_id for p in r.placements] == ["x"]


def test_reservation_is_the_exact_earliest_start_however_many_jobs_end_first() -> None:
    # 8 nodes of 8 single-device jobs; node i's job j ends at 8j + i + 1, so node 0 is the first
    # to be wholly free, at t=57, after 57 releases (more than the bisection's budget of tries).
    nodes = [node(f"n{i}") for i in range(8)]
    holding: list[RunningWorkload] = []
    for i in range(8):
        for j in range(8):
            w = workload(f"j{i}-{j}", req=request(1), est=float(8 * j + i + 1))
            holding.append(running(w, on(w, f"n{i}", (j,)), started_at=0))
    pool = Pool(nodes, (r.placement for r in holding))
    placer = Placer(pool, Eligibility(pool.nodes), TinyScorer(), ScoreContext(), PlacementOptions())
    head = workload("head", req=request(8))
    before = [pool.whole_free(i) for i in range(8)]
    res = reserve(
        placer, head, None, [(r.workload.estimated_duration_s or 0.0, r.placement) for r in holding]
    )
    assert res is not None and res.start == 57 and res.nodes == frozenset({0})
    assert [pool.whole_free(i) for i in range(8)] == before  # the pool is left as it was
    held_forever = [(float("inf"), r.placement) for r in holding]
    assert reserve(placer, workload("huge", count=9, req=request(8)), None, held_forever) is None


def test_no_reclaim_when_the_borrowed_room_comes_back_within_the_grace() -> None:
    # 'lender' is within its nominal quota but the cohort is lent out to 'borrower'. A borrower run
    # that ends within the grace frees the room by itself: no preemption. Ending later: reclaim.
    nodes = [node("a"), node("b")]
    queues = {
        "lender": queue("lender", {"*": 8}, cohort="c"),
        "borrower": queue("borrower", {"*": 8}, cohort="c"),
    }
    x = workload("x", req=request(8), queue="lender", created_at=100)

    def holding(est_short: float) -> list[RunningWorkload]:
        b1 = workload("b1", req=request(8), queue="borrower", est=10_000)
        b2 = workload("b2", req=request(8), queue="borrower", est=est_short)
        return [
            running(b1, on(b1, "a", tuple(range(8))), started_at=0),
            running(b2, on(b2, "b", tuple(range(8))), started_at=0),
        ]

    soon = run(sched(preempt_grace_s=600), nodes, queues, holding(400), [x], now=100)
    assert soon.preemptions == [] and "no preemption" in soon.pending_reasons["x"]
    late = run(sched(preempt_grace_s=600), nodes, queues, holding(5_000), [x], now=100)
    assert len(late.preemptions) == 1
    now_ = run(sched(preempt_grace_s=0), nodes, queues, holding(400), [x], now=100)
    assert len(now_.preemptions) == 1  # grace 0: reclaim at once, as Kueue does


def test_a_requeued_victim_ages_from_its_preemption_not_its_submission() -> None:
    # 'old' was submitted long ago and ran; preempted for a reclaim, it is requeued. It must not be
    # "starving" at once (it would preempt younger work in turn): its clock starts at the preemption.
    nodes = [node("a")]
    queues = {
        "lender": queue("lender", {"*": 8}, cohort="c"),
        "borrower": queue("borrower", {"*": 1}, cohort="c"),
    }
    old = workload("old", req=request(8), queue="borrower", created_at=0, est=100 * STARVE)
    x = workload("x", req=request(8), queue="lender", created_at=5 * STARVE, est=10 * STARVE)
    s = sched(preempt_grace_s=0)
    r = run(
        s, nodes, queues, [running(old, on(old, "a", tuple(range(8))), started_at=10)], [x], now=5 * STARVE
    )
    assert [p.job_id for p in r.preemptions] == ["old"]
    r = run(s, nodes, queues, [], [old, x], now=5 * STARVE + 60)
    assert [p.job_id for p in r.placements] == ["x"]  # nominated; 'old' is not starving
    xr = running(x, on(x, "a", tuple(range(8))), started_at=5 * STARVE + 60)
    r = run(s, nodes, queues, [xr], [old], now=5 * STARVE + 120)
    assert r.preemptions == [] and "resources reserved" not in r.pending_reasons["old"]
    r = run(s, nodes, queues, [xr], [old], now=6 * STARVE + 1)  # a full threshold after its preemption
    assert "resources reserved" in r.pending_reasons["old"]


def test_equal_priority_goes_smallest_gpu_seconds_first_within_a_queue() -> None:
    nodes = [node("a", gpus=2)]
    queues = {"q": queue("q")}
    big = workload("big", req=request(2), created_at=0, est=1000)
    small = workload("small", req=request(1), created_at=5, est=100)
    unknown = workload("unknown", req=request(1), created_at=1)
    r = run(sched(), nodes, queues, [], [big, small, unknown], now=10)
    # 'big' is next (2,000 GPU-s): it waits for 'small' and holds the node; 'unknown' (no
    # estimate: last) may not start where it could delay 'big'.
    assert [p.job_id for p in r.placements] == ["small"]
    assert "resources reserved at t=110" in r.pending_reasons["big"]
    assert r.pending_reasons["unknown"].startswith("would delay big")
    r = run(sched(size_order=False), nodes, queues, [], [big, small, unknown], now=10)
    assert [p.job_id for p in r.placements] == ["big"]


def test_the_oldest_starving_job_goes_first_and_the_others_smallest_first() -> None:
    # Room for two. Oldest-first aging would run 'oldest' and 'mid' (a FIFO once many starve);
    # the oldest keeps the head of the line, the next place goes to the smallest starving job.
    nodes = [node("a", gpus=2)]
    queues = {"q": queue("q")}
    oldest = workload("oldest", created_at=0, est=5000)
    mid = workload("mid", created_at=1, est=4000)
    young = workload("young", created_at=2, est=10)
    r = run(sched(), nodes, queues, [], [young, mid, oldest], now=2 * STARVE)
    assert sorted(p.job_id for p in r.placements) == ["oldest", "young"]
    r = run(sched(starving_order="age"), nodes, queues, [], [young, mid, oldest], now=2 * STARVE)
    assert sorted(p.job_id for p in r.placements) == ["mid", "oldest"]


def test_the_oldest_starving_jobs_get_their_reservations_before_smaller_ones_start() -> None:
    # One 4-GPU node: 2 GPUs free now, 2 more at t=now+100. 'oldest' takes one; 'mid' (3 GPUs) could
    # start at now+100, unless 'young' (smaller, ends at now+500) takes the last GPU first.
    nodes = [node("a", gpus=4)]
    queues = {"q": queue("q")}
    now = 2 * STARVE
    r1 = workload("r1", req=request(2), est=now + 100)
    holding = [running(r1, on(r1, "a", (0, 1)))]
    oldest = workload("oldest", created_at=0, est=5000)
    mid = workload("mid", req=request(3), created_at=1, est=1000)
    young = workload("young", created_at=2, est=500)
    pending = [young, mid, oldest]
    r = run(sched(starving_head=1), nodes, queues, holding, pending, now=now)
    assert sorted(p.job_id for p in r.placements) == ["oldest", "young"]
    assert f"resources reserved at t={now + 500:.0f}" in r.pending_reasons["mid"]
    r = run(sched(starving_head=2), nodes, queues, holding, pending, now=now)
    assert [p.job_id for p in r.placements] == ["oldest"]
    assert f"resources reserved at t={now + 100:.0f}" in r.pending_reasons["mid"]
    with pytest.raises(ValueError, match="starving_head"):
        sched(starving_head=0)


def test_backfill_each_reservation_lets_work_use_the_nodes_of_reservations_it_ends_before() -> None:
    # Two starving jobs hold node a (from now+100) and node b (from now+1000). 'short' ends at
    # now+500: it would delay the reservation on a, not the one on b, so it starts on b now
    # ('long' would delay both).
    nodes = [node("a", gpus=2), node("b", gpus=2)]
    queues = {"q": queue("q")}
    now = 2 * STARVE
    ra = workload("ra", req=request(2), est=now + 100)
    rb = workload("rb", est=now + 1000)
    holding = [running(ra, on(ra, "a", (0, 1))), running(rb, on(rb, "b", (0,)))]
    first = workload("first", req=request(2), created_at=0, est=50)
    second = workload("second", req=request(2), created_at=1, est=50)
    short = workload("short", created_at=now - 10, est=500)
    long = workload("long", created_at=now - 10, est=5000)
    pending = [first, second, short, long]
    r = run(sched(preemption=False, backfill_each_reservation=True), nodes, queues, holding, pending, now=now)
    assert f"resources reserved at t={now + 100:.0f}" in r.pending_reasons["first"]
    assert f"resources reserved at t={now + 1000:.0f}" in r.pending_reasons["second"]
    assert [(p.job_id, p.assignments[0].node) for p in r.placements] == [("short", "b")]  # not 'long'
    # By default the earliest reservation (now+100) bounds every reserved node.
    r = run(sched(preemption=False), nodes, queues, holding, pending, now=now)
    assert r.placements == []


def test_a_reservation_waiting_on_quota_is_held_whole() -> None:
    # The cohort (16) has 3 to lend and 'big' needs 4: it waits on quota, not on room. Its node is
    # held whole: a long 1-GPU job (within its own quota) on the spare of that node would take the
    # quota 'big' waits for, and keep taking it as it frees.
    nodes = [node("a"), node("b")]
    queues = {"big": queue("big", {"*": 2}, cohort="c"), "small": queue("small", {"*": 14}, cohort="c")}
    s1 = workload("s1", req=request(5), queue="small", est=500)
    s2 = workload("s2", req=request(8), queue="small", est=800)
    holding = [running(s1, on(s1, "a", tuple(range(5)))), running(s2, on(s2, "b", tuple(range(8))))]
    big = workload("big", req=request(4), queue="big", created_at=0, est=100)
    long = workload("long", req=request(1), queue="small", created_at=1, est=10_000)
    r = run(sched(reservation_spare=True), nodes, queues, holding, [big, long], now=10)
    assert [p.job_id for p in r.placements] == ["long"]  # not starving yet: no reservation
    r = run(sched(reservation_spare=True), nodes, queues, holding, [big, long], now=STARVE)
    assert r.placements == []
    assert "resources reserved at t=500" in r.pending_reasons["big"]
    assert r.pending_reasons["long"].startswith("would delay big")
