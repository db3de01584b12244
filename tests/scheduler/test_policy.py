"""The round: EASY backfill, FIFO blocking, preemption victims and rules, why-pending lines."""

from __future__ import annotations

from modelplane.core.placement import Placement, TaskAssignment
from modelplane.core.workload import Workload
from modelplane.scheduler.interface import RunningWorkload, SchedulingInput, SchedulingResult
from modelplane.scheduler.policy import PolicyOptions, PolicyScheduler
from modelplane.scheduler.preemption import victim_cost
from tests.scheduler.factories import TinyScorer, affinity, node, queue, request, running, workload


def on(w: Workload, node_name: str, devices: tuple[int, ...]) -> Placement:
    return Placement(
        w.job_id,
        tuple(
            TaskAssignment(
                "worker",
                0,
                0,
                node_name,
                w.pod_sets[0].request.cpu_milli,
                w.pod_sets[0].request.memory_mib,
                devices,
                1000,
            )
            for _ in [0]
        ),
    )


def sched(**options: object) -> PolicyScheduler:
    return PolicyScheduler("t", PolicyOptions(**options), TinyScorer())  # type: ignore[arg-type]


def run(s: PolicyScheduler, nodes, queues, running_, pending, now: float = 0.0) -> SchedulingResult:  # type: ignore[no-untyped-def]
    return s.schedule(SchedulingInput(nodes, queues, running_, pending, now))


# -- EASY backfill ---------------------------------------------------------------------------------


def backfill_case() -> tuple[list, dict, list[RunningWorkload]]:  # type: ignore[type-arg]
    # Two 8-device nodes; 'long' holds 4 devices of a until t=100. The head needs both whole nodes.
    nodes = [node("a"), node("b")]
    long = workload("long", req=request(4), est=100)
    return nodes, {"q": queue("q")}, [running(long, on(long, "a", (0, 1, 2, 3)), started_at=0)]


def test_small_job_that_ends_before_the_reservation_backfills() -> None:
    nodes, queues, holding = backfill_case()
    head = workload("head", count=2, req=request(8), created_at=0, est=500)
    short = workload("short", req=request(2), created_at=1, est=50)
    r = run(sched(order="fifo", preemption=False), nodes, queues, holding, [head, short], now=10)
    assert [p.job_id for p in r.placements] == ["short"]
    assert "resources reserved at t=100" in r.pending_reasons["head"]


def test_job_that_would_delay_the_head_waits() -> None:
    nodes, queues, holding = backfill_case()
    head = workload("head", count=2, req=request(8), created_at=0, est=500)
    late = workload("late", req=request(2), created_at=1, est=1000)
    unknown = workload("unknown", req=request(2), created_at=2)
    r = run(sched(order="fifo", preemption=False), nodes, queues, holding, [head, late, unknown], now=10)
    assert r.placements == []
    assert r.pending_reasons["late"].startswith("would delay head (head), reserved to start at t=100")
    assert "would delay head" in r.pending_reasons["unknown"]


def test_job_off_the_reserved_nodes_backfills_whatever_its_length() -> None:
    nodes = [node("a"), node("b"), node("c", model="AMD-MI250")]
    long = workload("long", req=request(4), est=100)
    holding = [running(long, on(long, "a", (0, 1, 2, 3)))]
    head = workload("head", count=2, req=request(8, models=("NVIDIA-A100",)), created_at=0)
    other = workload("other", req=request(8), created_at=1)  # no estimate, but fits on c
    r = run(sched(order="fifo", preemption=False), nodes, {"q": queue("q")}, holding, [head, other], now=10)
    assert [(p.job_id, p.nodes) for p in r.placements] == [("other", ["c"])]


def test_work_running_past_the_reservation_may_use_only_the_spare_of_its_nodes() -> None:
    # 'busy' holds 6 of a's 8 devices until t=500; the head needs 7 at once, so a is reserved for
    # t=500 and keeps 1 device spare then. One long job may take it, a second may not.
    nodes = [node("a")]
    busy = workload("busy", req=request(6), est=500)
    holding = [running(busy, on(busy, "a", tuple(range(6))))]
    head = workload("head", req=request(7), created_at=0, est=100)
    long1 = workload("long1", req=request(1), created_at=1, est=10_000)
    long2 = workload("long2", req=request(1), created_at=2, est=10_000)
    r = run(
        sched(order="fifo", preemption=False, reservation_spare=True),
        nodes,
        {"q": queue("q")},
        holding,
        [head, long1, long2],
        now=10,
    )
    assert [p.job_id for p in r.placements] == ["long1"]
    assert "resources reserved at t=500" in r.pending_reasons["head"]
    assert r.pending_reasons["long2"].startswith("would delay head (head), reserved to start at t=500")
    r = run(
        sched(order="fifo", preemption=False), nodes, {"q": queue("q")}, holding, [head, long1, long2], now=10
    )
    assert r.placements == []  # the default: the whole node held


def test_strict_fifo_blocks_everything_behind_the_head() -> None:
    nodes, queues, holding = backfill_case()
    head = workload("head", count=2, req=request(8), created_at=0)
    short = workload("short", req=request(2), created_at=1, est=5)
    r = run(
        sched(order="fifo", backfill=False, strict_fifo=True, preemption=False),
        nodes,
        queues,
        holding,
        [head, short],
        now=10,
    )
    assert r.placements == []
    assert r.pending_reasons["short"].startswith("waiting behind head")


# -- preemption ------------------------------------------------------------------------------------


def one_node_busy(
    victims: list[tuple[Workload, tuple[int, ...], float, float | None]],
) -> list[RunningWorkload]:
    return [running(w, on(w, "a", devs), started_at=s, last_checkpoint_at=c) for w, devs, s, c in victims]


def test_only_strictly_lower_priority_is_preempted() -> None:
    nodes = [node("a")]
    queues = {"q": queue("q")}
    same = workload("same", req=request(8), priority=5)
    holding = one_node_busy([(same, tuple(range(8)), 0.0, None)])
    r = run(sched(), nodes, queues, holding, [workload("x", req=request(8), priority=5)])
    assert r.preemptions == []
    r = run(sched(), nodes, queues, holding, [workload("x", req=request(8), priority=6)])
    assert [p.job_id for p in r.preemptions] == ["same"]
    assert r.preemptions[0].reason.startswith("preempted for x (x, priority 6 > 5)")
    assert r.pending_reasons["x"].startswith("preempting 1 job(s) of lower priority")
    assert r.placements == []  # x starts once its victim has stopped


def test_victims_are_few_and_cheapest_first() -> None:
    nodes = [node("a")]
    queues = {"q": queue("q")}
    low_old_ckpt = workload("low-old", req=request(2), priority=1)
    low_new_ckpt = workload("low-new", req=request(2), priority=1)
    mid = workload("mid", req=request(4), priority=2)
    holding = one_node_busy(
        [
            (low_old_ckpt, (0, 1), 0.0, 10.0),
            (low_new_ckpt, (2, 3), 0.0, 90.0),
            (mid, (4, 5, 6, 7), 0.0, None),
        ]
    )
    # Needs 2 devices: one victim suffices; the one losing least work since its checkpoint goes.
    r = run(sched(), nodes, queues, holding, [workload("x", req=request(2), priority=9)], now=100)
    assert [p.job_id for p in r.preemptions] == ["low-new"]
    # Needs 4 devices: 'mid' alone would do, but both low ones cost less (lower priority) and also suffice.
    r = run(sched(), nodes, queues, holding, [workload("x", req=request(4), priority=9)], now=100)
    assert sorted(p.job_id for p in r.preemptions) == ["low-new", "low-old"]


def test_pruning_drops_victims_that_do_not_help() -> None:
    nodes = [node("a"), node("b")]
    queues = {"q": queue("q")}
    cheap = workload("cheap", req=request(1), priority=1)
    big = workload("big", req=request(8), priority=2)
    holding = [running(cheap, on(cheap, "a", (0,))), running(big, on(big, "b", tuple(range(8))))]
    for i in range(1, 8):  # a is otherwise full of equal-priority work that may not be touched
        w = workload(f"peer{i}", req=request(1), priority=9)
        holding.append(running(w, on(w, "a", (i,))))
    r = run(sched(), nodes, queues, holding, [workload("x", req=request(8), priority=9)])
    assert [p.job_id for p in r.preemptions] == ["big"]  # 'cheap' was tried first, then released


def test_victim_cost_order() -> None:
    a = running(workload("a", priority=1), Placement("a", ()), started_at=0, last_checkpoint_at=50)
    b = running(workload("b", priority=1), Placement("b", ()), started_at=40, last_checkpoint_at=None)
    c = running(workload("c", priority=0), Placement("c", ()), started_at=0, last_checkpoint_at=0)
    assert sorted([a, b, c], key=victim_cost) == [c, a, b]


def test_training_queue_within_quota_is_not_preempted_by_another_queue() -> None:
    nodes = [node("a")]
    queues = {
        "train": queue("train", {"*": 8}, kind="training"),
        "other": queue("other", {"*": 8}, kind="training"),
    }
    t = workload("t", req=request(8), queue="train", priority=1)
    holding = one_node_busy([(t, tuple(range(8)), 0.0, None)])
    r = run(sched(), nodes, queues, holding, [workload("x", req=request(8), queue="other", priority=100)])
    assert r.preemptions == []


def test_batch_work_yields_to_training_of_another_queue() -> None:
    nodes = [node("a")]
    queues = {
        "batch": queue("batch", {"*": 8}, kind="batch"),
        "train": queue("train", {"*": 8}, kind="training"),
    }
    b = workload("b", req=request(8), queue="batch", priority=1)
    holding = one_node_busy([(b, tuple(range(8)), 0.0, None)])
    r = run(sched(), nodes, queues, holding, [workload("x", req=request(8), queue="train", priority=2)])
    assert [p.job_id for p in r.preemptions] == ["b"]
    assert "batch queue batch yields" in r.preemptions[0].reason


def test_reclaim_from_a_borrower_in_the_cohort() -> None:
    nodes = [node("a"), node("b")]
    queues = {
        "lender": queue("lender", {"*": 8}, cohort="c", kind="training"),
        "borrower": queue("borrower", {"*": 8}, cohort="c", kind="training"),
    }
    b1 = workload("b1", req=request(8), queue="borrower", priority=1)
    b2 = workload("b2", req=request(8), queue="borrower", priority=1)
    holding = [
        running(b1, on(b1, "a", tuple(range(8)))),
        running(b2, on(b2, "b", tuple(range(8))), started_at=5),
    ]
    r = run(sched(), nodes, queues, holding, [workload("x", req=request(8), queue="lender", priority=2)])
    assert [p.job_id for p in r.preemptions] == ["b2"]  # youngest of the two
    assert "reclaim: queue borrower borrows" in r.preemptions[0].reason


def test_room_made_for_one_preemptor_is_not_taken_by_the_next() -> None:
    nodes = [node("a")]
    queues = {"q": queue("q")}
    low = workload("low", req=request(8), priority=1)
    holding = one_node_busy([(low, tuple(range(8)), 0.0, None)])
    pending = [
        workload("x", req=request(8), priority=5, created_at=0),
        workload("y", req=request(8), priority=5, created_at=1),
    ]
    r = run(sched(), nodes, queues, holding, pending)
    assert [p.job_id for p in r.preemptions] == ["low"]
    assert r.pending_reasons["x"].startswith("preempting")
    assert not r.pending_reasons["y"].startswith("preempting")


# -- why pending -----------------------------------------------------------------------------------


def test_gang_reason_names_the_largest_switch_block_and_jobs_ahead() -> None:
    nodes = [node("a", switch="s0"), node("b", switch="s1")]
    filler = workload("filler", req=request(2))
    holding = [running(filler, on(filler, "a", (0, 1))), running(filler, on(filler, "b", (0, 1)))]
    pending = [
        workload("first", count=2, req=request(8), priority=9, created_at=0),
        workload("gang", count=2, req=request(8), priority=1, created_at=1),
    ]
    r = run(
        sched(order="priority", preemption=False, backfill=False), nodes, {"q": queue("q")}, holding, pending
    )
    assert r.pending_reasons["gang"] == (
        "needs 16 x NVIDIA-A100 in one switch (2 tasks); the largest free block under a switch is 6 and only 12 "
        "are free on eligible nodes; 1 queued job(s) of higher priority ahead"
    )


def test_reason_when_no_node_passes_the_filters() -> None:
    aff = affinity(
        {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z"]}]}
                ]
            }
        }
    )
    nodes = [node("a", labels={"zone": "a"}), node("b", model="AMD-MI250")]
    w = workload("w", req=request(1, models=("NVIDIA-A100",)), affinity=aff)
    r = run(sched(), nodes, {"q": queue("q")}, [], [w])
    assert r.pending_reasons["w"] == (
        "no node passes the filters for pod set 'worker' (1 fail accelerator model, "
        "1 fail node affinity; it accepts NVIDIA-A100)"
    )


def test_reason_for_missing_queue() -> None:
    r = run(sched(), [node("a")], {"q": queue("q")}, [], [workload("w", queue="nope")])
    assert "queue 'nope' does not exist" in r.pending_reasons["w"]


def test_every_unplaced_workload_gets_a_reason() -> None:
    nodes = [node("a")]
    pending = [workload(f"w{i}", req=request(4), created_at=i) for i in range(5)]
    r = run(sched(), nodes, {"q": queue("q")}, [], pending)
    placed = {p.job_id for p in r.placements}
    assert len(placed) == 2
    assert set(r.pending_reasons) == {w.job_id for w in pending} - placed


def test_higher_priority_preempts_within_its_own_full_queue() -> None:
    # Room on the pool, but the queue's quota is used up by its own lower-priority work (Kueue's
    # withinClusterQueue: LowerPriority).
    nodes = [node("a"), node("b")]
    queues = {"q": queue("q", {"*": 8})}
    low = workload("low", req=request(8), priority=1)
    holding = [running(low, on(low, "a", tuple(range(8))))]
    r = run(sched(), nodes, queues, holding, [workload("x", req=request(8), priority=3)])
    assert [p.job_id for p in r.preemptions] == ["low"]
    assert r.placements == []


def test_fgd_mix_can_be_given_by_the_caller() -> None:
    from modelplane.scheduler.scoring import ScoreContext

    seen: list[ScoreContext] = []

    class Spy(TinyScorer):
        name = "spy"

        def score(self, free, req, ctx):  # type: ignore[no-untyped-def]
            seen.append(ctx)
            return super().score(free, req, ctx)

    mix = ((request(2), 1.0),)
    s = PolicyScheduler("t", PolicyOptions(workload_mix=mix), Spy())
    run(s, [node("a")], {"q": queue("q")}, [], [workload("w")])
    assert seen and all(tuple(c.workload_mix) == mix for c in seen)
    seen.clear()
    run(
        PolicyScheduler("t", PolicyOptions(), Spy()),
        [node("a")],
        {"q": queue("q")},
        [],
        [workload("w", req=request(3))],
    )
    assert seen and [r for r, _ in seen[0].workload_mix] == [request(3)]


def test_sjf_runs_the_shortest_estimate_first() -> None:
    from modelplane.scheduler.registry import create_scheduler

    pending = [
        workload("long", req=request(8), est=500, created_at=0),
        workload("none", req=request(8), created_at=1),
        workload("short", req=request(8), est=5, created_at=2),
    ]
    r = create_scheduler("sjf", scorer=TinyScorer()).schedule(
        SchedulingInput([node("a")], {"q": queue("q")}, [], pending)
    )
    assert [p.job_id for p in r.placements] == ["short"]


def test_reason_for_a_share_that_fits_no_device() -> None:
    filler = workload("filler", req=request(1, 800))
    placed = Placement("filler", (TaskAssignment("worker", 0, 0, "a", 0, 0, (0,), 800),))
    r = run(
        sched(preemption=False, backfill=False),
        [node("a", gpus=1)],
        {"q": queue("q")},
        [running(filler, placed)],
        [workload("w", req=request(1, 500))],
    )
    assert r.pending_reasons["w"] == (
        "no room for 1 x (0.5 of one accelerator + 1 CPU + 1024 MiB) on 1 eligible "
        "node(s), the largest free share of a device is 0.2"
    )
