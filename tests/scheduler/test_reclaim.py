"""Reclaim of lent quota regardless of priority (Kueue's ``reclaimWithinCohort: Any``).

A queue that takes back quota it lent preempts the borrowers of its cohort even when they have
equal or higher priority; it never takes more than its nominal quota that way, and it never takes
anything from a queue that does not borrow.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelplane.core.placement import Placement, TaskAssignment, free_capacity
from modelplane.core.queue import QueueSpec
from modelplane.core.workload import Workload
from modelplane.scheduler.interface import RunningWorkload, SchedulingInput, SchedulingResult
from modelplane.scheduler.policy import PolicyOptions, PolicyScheduler
from modelplane.scheduler.quota import QuotaBook
from modelplane.scheduler.registry import create_scheduler
from tests.scheduler.factories import TinyScorer, node, queue, request, running, workload

A100 = "NVIDIA-A100"


def on(w: Workload, node_name: str, devices: tuple[int, ...]) -> Placement:
    r = w.pod_sets[0].request
    return Placement(
        w.job_id, (TaskAssignment("worker", 0, 0, node_name, r.cpu_milli, r.memory_mib, devices, 1000),)
    )


def run(nodes, queues, holding, pending, **options: object) -> SchedulingResult:  # type: ignore[no-untyped-def]
    s = PolicyScheduler("t", PolicyOptions(**options), TinyScorer())  # type: ignore[arg-type]
    return s.schedule(SchedulingInput(nodes, queues, holding, pending, 0.0))


def two_queues(lender_kind: str = "training") -> dict[str, QueueSpec]:
    return {
        "lender": queue("lender", {"*": 8}, cohort="c", kind=lender_kind),
        "borrower": queue("borrower", {"*": 8}, cohort="c", kind="training"),
    }


def borrower_holds_both_nodes(priority: int) -> tuple[list, list[RunningWorkload]]:  # type: ignore[type-arg]
    nodes = [node("a"), node("b")]
    b1 = workload("b1", req=request(8), queue="borrower", priority=priority)
    b2 = workload("b2", req=request(8), queue="borrower", priority=priority)
    return nodes, [
        running(b1, on(b1, "a", tuple(range(8)))),
        running(b2, on(b2, "b", tuple(range(8))), started_at=5),
    ]


def test_reclaim_preempts_a_borrower_of_higher_priority() -> None:
    nodes, holding = borrower_holds_both_nodes(priority=100)
    r = run(nodes, two_queues(), holding, [workload("x", req=request(8), queue="lender", priority=1)])
    assert [p.job_id for p in r.preemptions] == ["b2"]  # one is enough: the youngest
    assert r.preemptions[0].reason.startswith(
        "preempted for x (x, priority 1 <= 100): reclaim: queue borrower"
    )
    assert r.pending_reasons["x"].startswith("preempting 1 job(s) borrowing its queue's quota")


def test_reclaim_preempts_a_borrower_of_equal_priority() -> None:
    nodes, holding = borrower_holds_both_nodes(priority=5)
    r = run(nodes, two_queues(), holding, [workload("x", req=request(8), queue="lender", priority=5)])
    assert [p.job_id for p in r.preemptions] == ["b2"]


def test_no_reclaim_beyond_the_nominal_quota() -> None:
    # The lender already uses 4 of its 8; 8 more would put it over nominal: that is borrowing, not
    # reclaiming, so a borrower of equal priority keeps its room.
    nodes = [node("a"), node("b"), node("c")]
    mine = workload("mine", req=request(4), queue="lender", priority=5)
    b1 = workload("b1", req=request(8), queue="borrower", priority=5)
    b2 = workload("b2", req=request(8), queue="borrower", priority=5)
    holding = [
        running(mine, on(mine, "c", (0, 1, 2, 3))),
        running(b1, on(b1, "a", tuple(range(8)))),
        running(b2, on(b2, "b", tuple(range(8)))),
    ]
    queues = {
        "lender": queue("lender", {"*": 8}, cohort="c"),
        "borrower": queue("borrower", {"*": 12}, cohort="c"),
    }
    r = run(nodes, queues, holding, [workload("x", req=request(8), queue="lender", priority=5)])
    assert r.preemptions == []


def test_queue_within_its_quota_is_not_reclaimed_from() -> None:
    # Both queues within nominal (the pool is simply full): equal priority preempts nobody.
    nodes = [node("a"), node("b")]
    queues = {
        "lender": queue("lender", {"*": 16}, cohort="c"),
        "other": queue("other", {"*": 16}, cohort="c"),
    }
    o = workload("o", req=request(8), queue="other", priority=5)
    o2 = workload("o2", req=request(8), queue="other", priority=5)
    holding = [running(o, on(o, "a", tuple(range(8)))), running(o2, on(o2, "b", tuple(range(8))))]
    r = run(nodes, queues, holding, [workload("x", req=request(8), queue="lender", priority=5)])
    assert r.preemptions == []


def test_no_reclaim_across_cohorts() -> None:
    nodes, holding = borrower_holds_both_nodes(priority=5)
    queues = {
        "lender": queue("lender", {"*": 8}, cohort="other", kind="training"),
        "borrower": queue("borrower", {"*": 8}, cohort="c", kind="training"),
    }
    r = run(nodes, queues, holding, [workload("x", req=request(8), queue="lender", priority=5)])
    assert r.preemptions == []


# -- property: reclaim converges to every queue's nominal, within every limit ------------------


@st.composite
def cohort_st(draw: st.DrawFn) -> tuple[int, dict[str, QueueSpec]]:
    """Nodes of 8 A100s and 2-4 queues whose nominal quotas add up to the pool (Kueue's setup)."""
    n_nodes = draw(st.integers(2, 4))
    capacity = 8 * n_nodes
    n_queues = draw(st.integers(2, 4))
    cuts = sorted(
        draw(
            st.lists(st.integers(1, capacity - 1), min_size=n_queues - 1, max_size=n_queues - 1, unique=True)
        )
    )
    shares = [b - a for a, b in zip([0, *cuts], [*cuts, capacity], strict=True)]
    queues = {}
    for i, share in enumerate(shares):
        doc: dict[str, object] = {
            "name": f"q{i}",
            "quota": {A100: share},
            "cohort": "c",
            "kind": draw(st.sampled_from(("training", "inference"))),
        }
        if draw(st.booleans()):
            doc["borrowingLimit"] = {A100: draw(st.integers(0, capacity))}
        queues[f"q{i}"] = QueueSpec.model_validate(doc)
    return n_nodes, queues


def assert_within_limits(book: QuotaBook) -> None:
    for q in book.queues:
        used, nominal = book.used(q, A100), book.nominal[q][A100]
        limit = book.borrow_limit[q]
        if limit is not None:
            assert used <= nominal + limit[A100], f"{q} uses {used} > nominal {nominal} + borrowing limit"
        assert book.cohort_used(q, A100) <= book.cohort_capacity(q, A100)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setup=cohort_st(), data=st.data())
def test_reclaiming_queue_gets_its_nominal_whatever_the_priorities(
    setup: tuple[int, dict[str, QueueSpec]], data: st.DataObject
) -> None:
    n_nodes, queues = setup
    nodes = [node(f"n{i}") for i in range(n_nodes)]
    names = sorted(queues)
    reclaimer = data.draw(st.sampled_from(names))
    others = [q for q in names if q != reclaimer]
    # Phase 1: the other queues flood the pool with 1-GPU jobs (borrowing all the idle quota), at
    # priorities that may be higher than anything the reclaimer has.
    flood = [
        workload(
            f"f{i}",
            queue=data.draw(st.sampled_from(others)),
            priority=data.draw(st.integers(0, 9)),
            created_at=float(i),
        )
        for i in range(8 * n_nodes + 4)
    ]
    # Phase 2: the reclaimer asks for up to its nominal quota, at low priority.
    nominal = round(queues[reclaimer].quota[A100])
    wanted = data.draw(st.integers(1, nominal))
    claims = [
        workload(f"r{i}", queue=reclaimer, priority=data.draw(st.integers(0, 3)), created_at=100.0 + i)
        for i in range(wanted)
    ]
    scheduler = create_scheduler("default", scorer="bestfit")
    run_: dict[str, RunningWorkload] = {}
    pending: list[Workload] = list(flood)
    now = 0.0
    stable = 0
    log: list[str] = []
    for round_ in range(60):
        if round_ == 3:
            pending += claims
        r = scheduler.schedule(SchedulingInput(nodes, queues, list(run_.values()), pending, now))
        by_id = {w.job_id: w for w in pending}
        log.append(
            f"{round_}: placed {[p.job_id for p in r.placements]} preempted {[p.reason for p in r.preemptions]}"
        )
        for pre in r.preemptions:
            victim = run_.pop(pre.job_id).workload
            pending.append(victim)
            # Only queues that borrow give anything back to the reclaimer, and never the reclaimer's.
            assert victim.queue != reclaimer or "same queue" in pre.reason, pre.reason
        for p in r.placements:
            run_[p.job_id] = RunningWorkload(by_id[p.job_id], p, started_at=now)
        placed = {p.job_id for p in r.placements}
        pending = [w for w in pending if w.job_id not in placed]
        free_capacity(nodes, [x.placement for x in run_.values()])  # raises on over-allocation
        book = QuotaBook(queues)
        by_name = {n.name: n for n in nodes}
        for x in run_.values():
            book.charge(x.workload.queue, x.placement, by_name)
        assert_within_limits(book)
        now += 10.0
        stable = stable + 1 if round_ > 3 and not r.preemptions and not r.placements else 0
        if stable >= 2:
            break
    # Converged (no preemption loop), and the reclaimer holds everything it asked for.
    assert stable >= 2, f"reclaim did not settle within 60 rounds: {queues} {log[-6:]}"
    assert {j for j, x in run_.items() if x.workload.queue == reclaimer} == {w.job_id for w in claims}, (
        f"{reclaimer} {queues} {log}"
    )
    assert book.used(reclaimer, A100) == 1000 * wanted <= 1000 * nominal
