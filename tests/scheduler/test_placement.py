"""Placement framework and its score plugins on hand-made pools."""

from __future__ import annotations

from modelplane.core.affinity import Taint, TaintEffect
from modelplane.core.placement import NodeFree, TaskAssignment
from modelplane.core.topology import cross_switch_links
from modelplane.core.workload import TaskRequest
from modelplane.scheduler.filters import Eligibility
from modelplane.scheduler.placement import LeastFreeScorer, PlacementOptions, Placer
from modelplane.scheduler.pool import Pool
from modelplane.scheduler.scoring import ScoreContext
from tests.scheduler.factories import TinyScorer, affinity, node, request, workload


def placer(nodes, scorer=None, **options) -> Placer:  # type: ignore[no-untyped-def]
    pool = Pool(nodes)
    return Placer(pool, Eligibility(pool.nodes), scorer or TinyScorer(), ScoreContext(), PlacementOptions(**options))


def occupy(p: Placer, node_name: str, devices: tuple[int, ...], milli: int = 1000) -> None:
    p.pool.take(TaskAssignment("x", 0, 0, node_name, 0, 0, devices, milli))


def test_preferred_affinity_weight_wins_over_packing() -> None:
    nodes = [node("a", labels={"zone": "a"}), node("b", labels={"zone": "b"})]
    p = placer(nodes)
    occupy(p, "a", (0, 1, 2, 3))  # a is fuller: packing alone would pick it
    aff = affinity({"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 5, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
        {"weight": 40, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}},
    ]})
    placed = p.place(workload("w", affinity=aff))
    assert placed is not None and placed.nodes == ["b"]


def test_prefer_no_schedule_taint_avoided_when_possible() -> None:
    soft = Taint(key="old", effect=TaintEffect.PREFER_NO_SCHEDULE)
    p = placer([node("a", taints=[soft]), node("b")])
    occupy(p, "a", (0, 1, 2, 3))
    placed = p.place(workload("w"))
    assert placed is not None and placed.nodes == ["b"]


def test_scorer_plugin_decides_among_feasible_nodes() -> None:
    class PreferNamed:
        name = "prefer-c"

        def score(self, free: NodeFree, req: TaskRequest, ctx: ScoreContext):  # type: ignore[no-untyped-def]
            devices = free.pick_devices(req)
            if devices is None or not free.fits(req):
                return None
            return (1.0 if free.node.name == "c" else 0.0), devices

    p = placer([node("a"), node("b"), node("c")], scorer=PreferNamed())
    placed = p.place(workload("w"))
    assert placed is not None and placed.nodes == ["c"]


def test_least_free_scorer_packs_and_prefers_cpu_nodes_for_cpu_tasks() -> None:
    s = LeastFreeScorer()
    full, empty = NodeFree.of(node("a")), NodeFree.of(node("b"))
    full.device_free[:6] = [0] * 6
    one = request(1)
    assert s.score(full, one, ScoreContext())[0] > s.score(empty, one, ScoreContext())[0]  # type: ignore[index]
    cpu = request(0)
    assert s.score(NodeFree.of(node("c", model=None)), cpu, ScoreContext())[0] > \
        s.score(empty, cpu, ScoreContext())[0]  # type: ignore[index]
    assert s.score(full, request(4), ScoreContext()) is None


def test_fractional_shares_pack_on_one_device() -> None:
    p = placer([node("a", gpus=2)])
    first = p.place(workload("w1", req=request(1, 500)))
    second = p.place(workload("w2", req=request(1, 400)))
    assert first is not None and second is not None
    assert first.assignments[0].devices == second.assignments[0].devices
    assert p.pool.free[0].device_free.count(1000) == 1


def test_gang_goes_under_one_switch_when_one_can_hold_it() -> None:
    nodes = [node(f"s0-{i}", switch="s0") for i in range(4)] + [node(f"s1-{i}", switch="s1") for i in range(4)]
    p = placer(nodes)
    occupy(p, "s1-0", (0,))  # s1 can no longer hold 4 whole nodes
    placed = p.place(workload("gang", count=4, req=request(8)))
    assert placed is not None
    paths = [nodes[p.pool.index[a.node]].topology for a in placed.assignments]
    assert cross_switch_links(paths) == 0
    assert all(a.node.startswith("s0-") for a in placed.assignments)


def test_gang_prefers_fullest_switch_that_fits() -> None:
    nodes = [node(f"s0-{i}", switch="s0") for i in range(4)] + [node(f"s1-{i}", switch="s1") for i in range(4)]
    p = placer(nodes)
    for i in range(2):
        occupy(p, f"s1-{i}", tuple(range(8)))
    placed = p.place(workload("gang", count=2, req=request(8)))
    assert placed is not None and placed.nodes == ["s1-2", "s1-3"]  # s0 stays whole for larger gangs


def test_gang_spans_fewest_switches_when_no_switch_holds_it() -> None:
    nodes = [node(f"s{s}-{i}", switch=f"s{s}") for s in range(3) for i in range(2)]
    p = placer(nodes)
    placed = p.place(workload("gang", count=4, req=request(8)))
    assert placed is not None
    switches = {a.node.split("-")[0] for a in placed.assignments}
    assert len(switches) == 2


def test_gang_all_or_nothing_leaves_pool_unchanged() -> None:
    p = placer([node("a"), node("b")])
    occupy(p, "b", (0,))
    before = [list(f.device_free) for f in p.pool.free]
    assert p.place(workload("gang", count=2, req=request(8))) is None
    assert [list(f.device_free) for f in p.pool.free] == before


def test_spread_replicas_use_separate_switches() -> None:
    nodes = [node(f"s{s}-{i}", switch=f"s{s}") for s in range(3) for i in range(3)]
    p = placer(nodes)
    placed = p.place(workload("inf", count=3, req=request(1), gang=False, spread=True))
    assert placed is not None
    assert len({a.node.split("-")[0] for a in placed.assignments}) == 3


def test_candidates_are_bounded_and_tightest_first() -> None:
    nodes = [node(f"n{i}") for i in range(40)]
    p = placer(nodes, max_candidates=4)
    occupy(p, "n7", (0, 1, 2, 3, 4, 5))  # 2 whole left: the tightest fit for a 2-device task
    ps = workload("w", req=request(2)).pod_sets[0]
    cands = p.candidates(ps, p.eligibility.of(ps), p.pool.models, None, None)
    assert len(cands) == 4
    assert cands[0] == p.pool.index["n7"]


def test_model_restriction_from_quota_is_honoured() -> None:
    p = placer([node("a", model="NVIDIA-A100"), node("b", model="AMD-MI250")])
    placed = p.place(workload("w"), models=["AMD-MI250"])
    assert placed is not None and placed.nodes == ["b"]
    assert p.place(workload("w2", req=request(1, models=("NVIDIA-A100",))), models=["AMD-MI250"]) is None


def test_excluded_nodes_are_not_used() -> None:
    p = placer([node("a"), node("b")])
    placed = p.place(workload("w"), exclude={0})
    assert placed is not None and placed.nodes == ["b"]
