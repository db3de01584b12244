"""Admission: nominal quota, cohort borrowing and lending limits, reclaim, fair share order."""

from __future__ import annotations

from modelplane.core.placement import Placement, TaskAssignment
from modelplane.scheduler.interface import SchedulingInput
from modelplane.scheduler.policy import PolicyOptions, PolicyScheduler
from modelplane.scheduler.quota import QuotaBook
from tests.scheduler.factories import TinyScorer, node, queue, request, running, workload
from tests.scheduler.test_starvation import on

NODES = {"a": node("a"), "m": node("m", model="AMD-MI250")}


def use(book: QuotaBook, q: str, gpus: int, on: str = "a") -> None:
    p = Placement(f"{q}-{gpus}", (TaskAssignment("w", 0, 0, on, 0, 0, tuple(range(gpus)), 1000),))
    book.charge(q, p, NODES)


def test_nominal_quota_without_cohort() -> None:
    book = QuotaBook({"research": queue("research", {"NVIDIA-A100": 16})})
    use(book, "research", 8)
    assert book.check("research", "NVIDIA-A100", 8000).ok
    v = book.check("research", "NVIDIA-A100", 9000)
    assert not v.ok and not v.reclaimable
    assert v.reason == (
        "queue research over quota for NVIDIA-A100 (8/16 used, needs 9; not in a cohort to borrow)"
    )
    assert not book.check("research", "AMD-MI250", 1000).ok  # unnamed model, no '*': quota 0


def test_star_quota_covers_unnamed_models_and_empty_quota_is_unlimited() -> None:
    book = QuotaBook({"q": queue("q", {"*": 4, "NVIDIA-A100": 1}), "free": queue("free")})
    assert book.key_for("q", "AMD-MI250") == "*"
    assert book.key_for("q", "NVIDIA-A100") == "NVIDIA-A100"
    assert book.check("q", "AMD-MI250", 4000).ok
    assert not book.check("q", "NVIDIA-A100", 2000).ok
    assert book.check("free", "NVIDIA-A100", 10**9).ok


def test_borrowing_within_cohort_and_limit() -> None:
    book = QuotaBook(
        {
            "a": queue("a", {"*": 8}, cohort="c", borrowingLimit={"*": 4}),
            "b": queue("b", {"*": 8}, cohort="c"),
        }
    )
    assert book.check("a", "NVIDIA-A100", 12_000).ok  # borrows 4 of b's idle 8
    assert not book.check("a", "NVIDIA-A100", 13_000).ok  # beyond its borrowing limit
    assert book.check("b", "NVIDIA-A100", 16_000).ok  # no limit: the whole cohort
    use(book, "a", 12)
    assert book.borrowing("a", "*")
    v = book.check("b", "NVIDIA-A100", 8000)
    assert not v.ok and v.reclaimable  # b is within its own quota, but lent 4 of it to a
    assert book.check("b", "NVIDIA-A100", 4000).ok


def test_lending_limit_keeps_a_guaranteed_part() -> None:
    book = QuotaBook(
        {
            "a": queue("a", {"*": 8}, cohort="c"),
            "b": queue("b", {"*": 8}, cohort="c", lendingLimit={"*": 2}),
        }
    )
    assert book.check("a", "NVIDIA-A100", 10_000).ok  # 8 own + 2 lendable of b
    assert not book.check("a", "NVIDIA-A100", 11_000).ok
    v = book.check("a", "NVIDIA-A100", 11_000)
    assert "cohort c has 2 to lend" in v.reason


def test_share_is_weighted_dominant_usage() -> None:
    book = QuotaBook(
        {
            "a": queue("a", {"*": 8}, cohort="c", weight=2),
            "b": queue("b", {"*": 8}, cohort="c"),
        }
    )
    use(book, "a", 8)
    use(book, "b", 4)
    assert book.share("a") == 8 / 16 / 2
    assert book.share("b") == 4 / 16


def test_fair_order_lets_the_lighter_queue_go_first() -> None:
    # One 8-device node. Queue heavy already runs on another model; light runs nothing: light goes first
    # even though heavy's job is older and of higher priority.
    nodes = [node("a"), node("m", model="AMD-MI250")]
    queues = {"heavy": queue("heavy", {"*": 16}, cohort="c"), "light": queue("light", {"*": 16}, cohort="c")}
    from modelplane.scheduler.interface import RunningWorkload

    busy = workload("busy", req=request(8), queue="heavy")
    run = RunningWorkload(
        busy, Placement("busy", (TaskAssignment("worker", 0, 0, "m", 0, 0, tuple(range(8)), 1000),))
    )
    pending = [
        workload("h", req=request(8, models=("NVIDIA-A100",)), queue="heavy", priority=10, created_at=0),
        workload("l", req=request(8, models=("NVIDIA-A100",)), queue="light", priority=1, created_at=5),
    ]
    s = PolicyScheduler("t", PolicyOptions(preemption=False, backfill=False), TinyScorer())
    r = s.schedule(SchedulingInput(nodes, queues, [run], pending, 0.0))
    assert [p.job_id for p in r.placements] == ["l"]
    prio = PolicyScheduler(
        "t", PolicyOptions(order="priority", preemption=False, backfill=False), TinyScorer()
    )
    r2 = prio.schedule(SchedulingInput(nodes, queues, [run], pending, 0.0))
    assert [p.job_id for p in r2.placements] == ["h"]


def test_quota_refusal_does_not_block_the_jobs_behind() -> None:
    nodes = [node("a")]
    queues = {"small": queue("small", {"*": 2}), "big": queue("big", {"*": 8})}
    pending = [
        workload("over", req=request(4), queue="small", created_at=0),
        workload("ok", req=request(4), queue="big", created_at=1),
    ]
    s = PolicyScheduler("t", PolicyOptions(order="fifo", backfill=False, strict_fifo=True), TinyScorer())
    r = s.schedule(SchedulingInput(nodes, queues, [], pending, 0.0))
    assert [p.job_id for p in r.placements] == ["ok"]
    assert r.pending_reasons["over"].startswith("queue small over quota for NVIDIA-A100")


def test_idle_quota_is_lent_smallest_gpu_seconds_first_across_queues() -> None:
    # 12 of 16 GPUs in use, 4 idle to lend; 'a' and 'b' each need to borrow 4. By fair share 'a'
    # (using nothing) would go first with 4,000 GPU-s; lent quota goes to the smallest work instead.
    nodes = [node("x"), node("y")]
    queues = {
        "a": queue("a", {"*": 2}, cohort="c"),
        "b": queue("b", {"*": 2}, cohort="c"),
        "c": queue("c", {"*": 12}, cohort="c"),
    }
    big_c = workload("c1", req=request(8), queue="c", est=10_000)
    c2 = workload("c2", req=request(3), queue="c", est=10_000)
    b1 = workload("b1", req=request(1), queue="b", est=10_000)
    holding = [
        running(big_c, on(big_c, "x", tuple(range(8)))),
        running(c2, on(c2, "y", (0, 1, 2))),
        running(b1, on(b1, "y", (3,))),
    ]
    a_big = workload("a-big", req=request(4), queue="a", created_at=0, est=1000)
    b_small = workload("b-small", req=request(4), queue="b", created_at=5, est=10)

    def placed(**options: object) -> list[str]:
        s = PolicyScheduler("t", PolicyOptions(**options), TinyScorer())  # type: ignore[arg-type]
        r = s.schedule(SchedulingInput(nodes, queues, holding, [a_big, b_small], 10))
        return [p.job_id for p in r.placements]

    assert placed() == ["b-small"]
    assert placed(borrow_order="fair") == ["a-big"]
