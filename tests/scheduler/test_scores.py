"""Score plugins on hand-made nodes: values as the published definitions give them, and choices."""

from __future__ import annotations

import math

import pytest

from modelplane.core.node import Node
from modelplane.core.placement import NodeFree
from modelplane.core.workload import TaskRequest
from modelplane.scheduler.scores import DEFAULT_SCORER
from modelplane.scheduler.scores.fgd import fgd_int_score, fgd_options
from modelplane.scheduler.scores.fgd_cpu_excess import opens_whole_node
from modelplane.scheduler.scores.fragmentation import (
    cpu_aware_fragmentation,
    cpu_excess_fragmentation,
    fit_excess_fragmentation,
    node_fragmentation,
    structural_stranding,
    typical_mix,
)
from modelplane.scheduler.scores.gpuclustering import GpuClusteringScorer
from modelplane.scheduler.scoring import ScoreContext, create_scorer, scorer_names

CTX = ScoreContext()
PUBLISHED = ["random", "dotprod", "gpuclustering", "gpupacking", "bestfit", "fgd"]


def free_of(devices: list[int], cpu: int = 96_000, mem: int = 393_216, model: str = "G2", name: str = "n") -> NodeFree:
    node = Node(name=name, cpu_milli=96_000, memory_mib=393_216, gpu_model=model if devices else None, gpu_count=len(devices))
    return NodeFree(node, cpu, mem, list(devices))


def whole(n: int = 1, cpu: int = 4000) -> TaskRequest:
    return TaskRequest(cpu_milli=cpu, memory_mib=1024, gpu_count=n, gpu_milli=1000)


def share(milli: int, cpu: int = 4000) -> TaskRequest:
    return TaskRequest(cpu_milli=cpu, memory_mib=1024, gpu_count=1, gpu_milli=milli)


def test_every_published_scorer_is_registered_and_default_is_one_of_them() -> None:
    names = scorer_names()
    for n in PUBLISHED:
        assert n in names
        assert create_scorer(n).name == n
    assert DEFAULT_SCORER in names


@pytest.mark.parametrize("name", PUBLISHED)
def test_infeasible_requests_score_none(name: str) -> None:
    s = create_scorer(name)
    assert s.score(free_of([1000, 0]), whole(2), CTX) is None  # too few whole devices
    assert s.score(free_of([1000], cpu=1000), whole(1, cpu=4000), CTX) is None  # too little CPU
    assert s.score(free_of([1000]), TaskRequest(cpu_milli=1, gpu_count=1, gpu_milli=1000, gpu_models=("A100",)), CTX) is None
    assert s.score(free_of([]), share(500), CTX) is None  # CPU-only node


def test_bestfit_values_and_preference() -> None:
    s = create_scorer("bestfit")
    got = s.score(free_of([1000, 0, 0, 0, 0, 0, 0, 0]), whole(1), CTX)
    # left = 92000/128000*0.5 + 0/8000*0.5 = 0.359375 -> int(64.06)
    assert got == (64.0, (0,))
    idle = s.score(free_of([1000] * 8), whole(1), CTX)
    assert idle is not None and idle[0] < 64


def test_gpupacking_bands() -> None:
    s = create_scorer("gpupacking")
    on_shared = s.score(free_of([1000, 400, 1000, 1000]), share(300), CTX)
    assert on_shared == (96.0, (1,))  # 100 - (400*100/1000)/10
    used_node_free_device = s.score(free_of([1000, 100]), share(300), CTX)
    assert used_node_free_device == (49.0, (0,))
    idle_eight = s.score(free_of([1000] * 8), share(300), CTX)
    assert idle_eight == (25.0, (0,))
    assert s.score(free_of([1000] * 8), TaskRequest(cpu_milli=1000), CTX) == (0.0, ())


def test_gpuclustering_bands_with_exact_tags() -> None:
    tags = {"a": {"share": 3}, "b": {"share": 1, "1-gpu": 2}, "c": {}, "d": {"2-gpu": 1}}
    s = GpuClusteringScorer(lambda f: tags[f.node.name])
    req = share(500)
    only = s.score(free_of([1000] * 7 + [500], name="a"), req, CTX)
    mixed = s.score(free_of([1000] * 7 + [500], name="b"), req, CTX)
    idle = s.score(free_of([1000] * 8, name="c"), req, CTX)
    other = s.score(free_of([1000] * 6 + [0, 0], name="d"), req, CTX)
    assert only is not None and mixed is not None and idle is not None and other is not None
    assert only[0] == 75 + 25 * 500 // 8000
    assert mixed[0] == 50 + 25 * 500 // 8000
    assert idle[0] == 25
    assert other[0] == 25 * 2000 // 8000
    assert only[0] > mixed[0] > idle[0] > other[0]


def test_dotprod_prefers_the_node_the_task_takes_least_of() -> None:
    s = create_scorer("dotprod")
    small = s.score(free_of([1000, 0, 0, 0], cpu=8000), whole(1, cpu=8000), CTX)
    big = s.score(free_of([1000] * 8, cpu=96_000), whole(1, cpu=8000), CTX)
    assert small is not None and big is not None
    expected_small = int(100 * (1 - ((8000 / 128000) * (8000 / 128000) + (1000 / 8000) * (1000 / 8000)) / 2))
    assert small[0] == expected_small
    assert small[0] > big[0]


def test_random_is_deterministic_per_seed_and_uniform_enough() -> None:
    s = create_scorer("random")
    frees = [free_of([1000], name=f"n{i}") for i in range(20)]
    picks = []
    for seed in range(400):
        ctx = ScoreContext(seed=seed)
        scores = [(s.score(f, whole(1), ctx), f.node.name) for f in frees]
        assert scores == [(s.score(f, whole(1), ctx), f.node.name) for f in frees]
        picks.append(max((sc[0], name) for sc, name in scores if sc is not None)[1])
    assert len(set(picks)) == 20  # every node wins sometimes


def test_fragmentation_hand_example() -> None:
    mix = [(TaskRequest(cpu_milli=1000, gpu_count=1, gpu_milli=1000), 1.0)]
    assert node_fragmentation(96_000, [1000, 300], "G2", mix) == 300
    # no whole device left: everything idle is fragment for a whole-device task
    assert node_fragmentation(96_000, [800, 300], "G2", mix) == 1100
    # too little CPU: also all fragment
    assert node_fragmentation(500, [1000, 300], "G2", mix) == 1300
    # a CPU-only shape never uses GPUs: all idle GPU share is fragment for it
    assert node_fragmentation(96_000, [1000, 300], "G2", [(TaskRequest(cpu_milli=1000), 1.0)]) == 1300
    # a shape that needs another model cannot use the node at all
    typed = [(TaskRequest(cpu_milli=1, gpu_count=1, gpu_milli=100, gpu_models=("T4",)), 1.0)]
    assert node_fragmentation(96_000, [1000, 300], "G2", typed) == 1300


def test_fgd_picks_the_device_that_fragments_least() -> None:
    mix = [(TaskRequest(cpu_milli=1000, gpu_count=1, gpu_milli=1000), 1.0)]
    options = fgd_options(96_000, [1000, 300], "G2", share(200), mix)
    assert options == [(-800.0, (0,)), (200.0, (1,))]
    s = create_scorer("fgd")
    got = s.score(free_of([1000, 300]), share(200), ScoreContext(workload_mix=mix))
    assert got == (float(int(100 / (1 + math.exp(-0.2)))), (1,))
    assert fgd_int_score(0.0) == 50


def test_fgd_keeps_whole_nodes_for_whole_device_tasks() -> None:
    mix = [(share(500), 0.5), (whole(1), 0.25), (whole(8), 0.25)]
    ctx = ScoreContext(workload_mix=mix)
    s = create_scorer("fgd")
    idle = s.score(free_of([1000] * 8, name="idle"), share(500), ctx)
    used = s.score(free_of([1000] * 7 + [500], name="used"), share(500), ctx)
    assert idle is not None and used is not None
    assert used[0] > idle[0]
    assert used[1] == (7,)


def test_typical_mix_covers_95_percent_by_frequency() -> None:
    a, b, c = whole(1), share(500), TaskRequest(cpu_milli=2000)
    reqs = [a] * 60 + [b] * 36 + [c] * 4
    mix = typical_mix(reqs)
    shapes = [s for s, _ in mix]
    assert len(shapes) == 2 and shapes[0].gpu_milli == 1000 and shapes[1].gpu_milli == 500
    assert math.isclose(sum(w for _, w in mix), 1.0)
    assert math.isclose(mix[0][1], 60 / 96)
    assert shapes[0].memory_mib == 0  # memory is not part of a shape


def test_fgd_plus_breaks_fgd_ties_towards_the_fuller_node_and_keeps_fgd_order() -> None:
    mix = [(share(500), 0.5), (whole(1), 0.25), (whole(8), 0.25)]
    ctx = ScoreContext(workload_mix=mix)
    fgd, plus = create_scorer("fgd"), create_scorer("fgd_plus")
    roomy = free_of([1000] * 7 + [500], name="roomy")
    full = free_of([1000] * 5 + [0, 0, 500], name="full")
    a, b = fgd.score(roomy, share(500), ctx), fgd.score(full, share(500), ctx)
    pa, pb = plus.score(roomy, share(500), ctx), plus.score(full, share(500), ctx)
    assert a is not None and b is not None and pa is not None and pb is not None
    assert a[0] == b[0]  # FGD cannot tell them apart ...
    assert pb[0] > pa[0]  # ... FGD+ prefers the node left with less free GPU
    assert (pa[1], pb[1]) == (a[1], b[1])  # and picks the same devices as FGD
    assert int(pa[0]) == a[0] and int(pb[0]) == b[0]  # the tie-break never crosses an FGD integer
    assert plus.score(free_of([1000, 0]), whole(2), ctx) is None


def test_fgd_cpu_pack_scores_gpu_tasks_exactly_as_fgd() -> None:
    mix = [(share(500), 0.5), (whole(1), 0.25), (whole(8), 0.25), (TaskRequest(cpu_milli=8000), 0.1)]
    ctx = ScoreContext(workload_mix=mix)
    fgd, pack = create_scorer("fgd"), create_scorer("fgd_cpu_pack")
    nodes = [
        free_of([1000] * 8),
        free_of([1000] * 7 + [500]),
        free_of([1000] * 5 + [0, 0, 500]),
        free_of([300, 1000]),
    ]
    for req in (share(500), share(200), whole(1), whole(2), whole(8)):
        for f in nodes:
            assert pack.score(f, req, ctx) == fgd.score(f, req, ctx)


def test_fgd_cpu_pack_puts_cpu_tasks_where_gpus_are_taken_without_crossing_fgd_integers() -> None:
    mix = [(whole(1), 0.5), (share(500), 0.5)]
    ctx = ScoreContext(workload_mix=mix)
    fgd, pack = create_scorer("fgd"), create_scorer("fgd_cpu_pack")
    cpu_task = TaskRequest(cpu_milli=4000, memory_mib=1024)
    idle, taken, cpu_only = free_of([1000] * 8), free_of([0] * 8), free_of([])
    scores = {
        name: (fgd.score(f, cpu_task, ctx), pack.score(f, cpu_task, ctx))
        for name, f in (("idle", idle), ("taken", taken), ("cpu_only", cpu_only))
    }
    plain = {name: a for name, (a, _) in scores.items()}
    packed = {name: b for name, (_, b) in scores.items()}
    assert all(v is not None for v in [*plain.values(), *packed.values()])
    assert plain["idle"] == plain["taken"] == plain["cpu_only"]  # FGD: a tie, left to node order
    # spend CPU where no GPU task needs it
    p_idle, p_taken, p_cpu_only = packed["idle"], packed["taken"], packed["cpu_only"]
    assert p_idle is not None and p_taken is not None and p_cpu_only is not None
    assert p_taken > p_idle and p_cpu_only > p_idle
    for name in plain:
        a, b = plain[name], packed[name]
        assert a is not None and b is not None and int(b[0]) == a[0] and b[1] == a[1] == ()
    # a CPU-only task that would starve the idle GPUs of CPU loses on FGD's own integer first
    starving = free_of([1000] * 8, cpu=4500)
    a, b = fgd.score(starving, cpu_task, ctx), pack.score(starving, cpu_task, ctx)
    assert a is not None and b is not None and packed["cpu_only"] is not None
    assert b[0] < a[0] + 1 and b[0] < packed["cpu_only"][0]


def test_cpu_aware_fragmentation_counts_gpus_the_cpu_cannot_feed() -> None:
    mix = [(whole(1, cpu=10_000), 0.5), (share(500, cpu=4000), 0.25), (TaskRequest(cpu_milli=8000), 0.25)]
    devices = [1000] * 7 + [300]
    # with CPU to spare it is FGD's measure
    assert cpu_aware_fragmentation(96_000, devices, "G2", mix) == node_fragmentation(96_000, devices, "G2", mix)
    # 40 CPUs feed 4 one-GPU tasks of 10 CPUs: 3 of the 7 whole devices (and the 300 remnant) stay idle
    # for that shape, where FGD counts only the remnant; the share shape (10 copies) is not limited
    total = sum(devices)
    expected = 0.5 * (total - 4000) + 0.25 * 300 + 0.25 * total
    assert cpu_aware_fragmentation(40_000, devices, "G2", mix) == pytest.approx(expected)
    assert node_fragmentation(40_000, devices, "G2", mix) == pytest.approx(0.5 * 300 + 0.25 * 300 + 0.25 * total)
    # a shape that no longer fits at all counts everything, as in FGD
    assert cpu_aware_fragmentation(3000, devices, "G2", mix) == pytest.approx(total)


def test_fgd_cpu_aware_keeps_cpu_for_the_gpus_where_fgd_sees_a_tie() -> None:
    mix = [(whole(1, cpu=10_000), 1.0)]
    ctx = ScoreContext(workload_mix=mix)
    fgd, aware = create_scorer("fgd"), create_scorer("fgd_cpu_aware")
    cpu_poor, cpu_rich = free_of([1000] * 8, cpu=40_000), free_of([1000] * 8, cpu=96_000)
    heavy = whole(1, cpu=20_000)
    a, b = fgd.score(cpu_poor, heavy, ctx), fgd.score(cpu_rich, heavy, ctx)
    assert a is not None and b is not None and a[0] == b[0]  # one more task still fits on both
    pa, pb = aware.score(cpu_poor, heavy, ctx), aware.score(cpu_rich, heavy, ctx)
    assert pa is not None and pb is not None
    # on the CPU-poor node the task's 20 CPUs idle two more GPUs (4 fed -> 2 fed); on the rich one none
    assert pb[0] > pa[0]
    assert pa[0] == fgd_int_score(-1000.0) and pb[0] == fgd_int_score(0.0)
    assert pa[1] == pb[1] == (0,)


def test_cpu_excess_fragmentation_counts_only_stranding_beyond_the_node_build() -> None:
    heavy = whole(1, cpu=18_000)
    mix = [(heavy, 0.5), (share(500, cpu=4000), 0.5)]
    # 96 CPUs run five copies of an 18-CPU one-GPU task: three of eight GPUs are stranded while idle
    assert structural_stranding(96_000, 8, heavy) == 3000
    assert structural_stranding(128_000, 8, heavy) == 1000
    assert structural_stranding(96_000, 8, share(500, cpu=4000)) == 0
    assert structural_stranding(96_000, 8, TaskRequest(cpu_milli=8000)) == 0
    idle = [1000] * 8
    kw = {"cpu_capacity": 96_000, "gpu_count": 8}
    # idle: the build's own stranding is not fragment, so the value is FGD's
    fgd_value = node_fragmentation(96_000, idle, "G2", mix)
    assert cpu_excess_fragmentation(96_000, idle, "G2", mix, **kw) == fgd_value
    assert cpu_aware_fragmentation(96_000, idle, "G2", mix) == pytest.approx(0.5 * 3000)
    # 60 CPUs left feed three copies: five GPUs stranded, two more than the build strands
    assert cpu_excess_fragmentation(60_000, idle, "G2", mix, **kw) == pytest.approx(0.5 * 2000)
    assert cpu_aware_fragmentation(60_000, idle, "G2", mix) == pytest.approx(0.5 * 5000)
    # devices too small for a shape count as in FGD; a shape that no longer fits counts everything; at
    # 10 CPUs the share shape (4 CPUs, none stranded by the build) feeds two of its six devices
    devices = [1000] * 6 + [300, 0]
    assert cpu_excess_fragmentation(96_000, devices, "G2", mix, **kw) == pytest.approx(0.5 * 300 + 0.5 * 300)
    got = cpu_excess_fragmentation(10_000, devices, "G2", mix, **kw)
    assert got == pytest.approx(0.5 * 6300 + 0.5 * 4300)


def g3_free(devices: list[int], cpu: int = 128_000) -> NodeFree:
    node = Node(name="g3", cpu_milli=128_000, memory_mib=786_432, gpu_model="G2", gpu_count=len(devices))
    return NodeFree(node, cpu, 786_432, list(devices))


def test_fgd_cpu_excess_leaves_the_choice_of_an_idle_whole_node_to_fgd() -> None:
    mix = [(whole(1, cpu=10_000), 0.9), (whole(8, cpu=88_000), 0.1)]
    ctx = ScoreContext(workload_mix=mix)
    fgd, aware, excess = create_scorer("fgd"), create_scorer("fgd_cpu_aware"), create_scorer("fgd_cpu_excess")
    g2, g3 = free_of([1000] * 8), g3_free([1000] * 8)
    assert opens_whole_node(g2, mix) and opens_whole_node(g3, mix)
    # 66 CPUs left on the 96-CPU node feed 6 of its 7 GPUs; 98 on the 128-CPU one feed all 7
    task = whole(1, cpu=30_000)
    s: dict[str, tuple[float, float]] = {}
    for name, scorer in (("fgd", fgd), ("aware", aware), ("excess", excess)):
        a, b = scorer.score(g2, task, ctx), scorer.score(g3, task, ctx)
        assert a is not None and b is not None and a[1] == b[1] == (0,)
        s[name] = (a[0], b[0])
    assert s["aware"][1] > s["aware"][0]  # the look-ahead opens the CPU-richest node
    assert s["excess"] == s["fgd"] and s["fgd"][0] == s["fgd"][1]  # FGD's tie, left to the node order
    # a node already in use is judged by the excess measure: 30 CPUs there strand one more GPU
    used = free_of([0] + [1000] * 7, cpu=86_000)
    assert not opens_whole_node(used, mix)
    got = excess.score(used, task, ctx)
    kw = {"cpu_capacity": 96_000, "gpu_count": 8}
    before = cpu_excess_fragmentation(86_000, [0] + [1000] * 7, "G2", mix, **kw)
    after = cpu_excess_fragmentation(56_000, [0, 0] + [1000] * 6, "G2", mix, **kw)
    assert got == (float(fgd_int_score(before - after)), (1,))
    # one GPU newly stranded for the 1-GPU shape; the 8-GPU shape (which no longer fits) loses one idle GPU
    assert before - after == pytest.approx(-0.9 * 1000 + 0.1 * 1000)
    # a node smaller than the mix's largest task is never judged as opening a whole node
    assert not opens_whole_node(free_of([1000] * 4), mix)
    assert opens_whole_node(free_of([1000] * 4), [(whole(4), 1.0)])


def test_fit_excess_fragmentation_counts_gpus_the_free_memory_cannot_feed() -> None:
    # a G2-like node: 96 CPUs, 384 GiB for 8 GPUs; the 1-GPU shape asks 64 GiB, so the idle node
    # feeds six copies by memory (two GPUs stranded by its build, not fragment) and twelve by CPU
    gib = 1024
    heavy = TaskRequest(cpu_milli=8000, memory_mib=64 * gib, gpu_count=1, gpu_milli=1000)
    light = TaskRequest(cpu_milli=4000, memory_mib=8 * gib, gpu_count=1, gpu_milli=500)
    mix = [(heavy, 0.5), (light, 0.5)]
    assert structural_stranding(96_000, 8, heavy, 384 * gib) == 2000
    assert structural_stranding(96_000, 8, heavy) == 0
    idle = [1000] * 8
    kw = {"cpu_capacity": 96_000, "mem_capacity": 384 * gib, "gpu_count": 8}
    fgd_value = node_fragmentation(96_000, idle, "G2", mix)
    assert fit_excess_fragmentation(96_000, 384 * gib, idle, "G2", mix, **kw) == fgd_value
    # 128 GiB left feed two copies: six GPUs stranded, four beyond the build's two; CPU is plenty
    assert fit_excess_fragmentation(96_000, 128 * gib, idle, "G2", mix, **kw) == pytest.approx(0.5 * 4000)
    assert cpu_excess_fragmentation(96_000, idle, "G2", mix, cpu_capacity=96_000, gpu_count=8) == fgd_value
    # under one copy's memory the heavy shape does not fit at all: every free GPU counts, as in FGD's
    # CPU test; the light one (8 GiB) still feeds seven of the eight GPUs
    assert fit_excess_fragmentation(96_000, 60 * gib, idle, "G2", mix, **kw) == pytest.approx(0.5 * 8000 + 0.5 * 1000)
    # the lower of the CPU and memory bounds wins: 16 CPUs feed two copies of the heavy shape (six
    # stranded, four beyond the build) and four of the light one
    assert fit_excess_fragmentation(16_000, 384 * gib, idle, "G2", mix, **kw) == pytest.approx(0.5 * 4000 + 0.5 * 4000)


def test_fgd_fit_excess_is_fgd_cpu_excess_where_memory_does_not_bind() -> None:
    mix = [(whole(1, cpu=10_000), 0.6), (share(500), 0.3), (whole(8, cpu=88_000), 0.1)]
    ctx = ScoreContext(workload_mix=mix)
    excess, fit = create_scorer("fgd_cpu_excess"), create_scorer("fgd_fit_excess")
    nodes = [free_of([1000] * 8), free_of([0] + [1000] * 7, cpu=86_000), free_of([500, 300] + [1000] * 6, cpu=40_000)]
    for free in nodes:
        for task in (whole(1, cpu=10_000), whole(2, cpu=30_000), share(500), share(300), TaskRequest(cpu_milli=8000)):
            assert fit.score(free, task, ctx) == excess.score(free, task, ctx)
    # a CPU-only task asking 48 GiB: where memory is short (100 GiB) it leaves one copy of the 48 GiB
    # GPU shape instead of two (one more GPU stranded); where it is ample it strands nothing
    heavy_mix = [(TaskRequest(cpu_milli=4000, memory_mib=48 * 1024, gpu_count=1, gpu_milli=1000), 1.0)]
    task = TaskRequest(cpu_milli=4000, memory_mib=48 * 1024)
    short = free_of([0] + [1000] * 7, mem=100 * 1024)
    roomy = free_of([0] + [1000] * 7, mem=384 * 1024)
    ctx = ScoreContext(workload_mix=heavy_mix)
    a, b = fit.score(short, task, ctx), fit.score(roomy, task, ctx)
    assert a is not None and b is not None and a[0] < b[0]
    a, b = excess.score(short, task, ctx), excess.score(roomy, task, ctx)
    assert a is not None and b is not None and a[0] == b[0]


def test_typical_mix_with_memory_keeps_the_shapes_and_takes_their_least_memory() -> None:
    reqs = [TaskRequest(cpu_milli=4000, memory_mib=m, gpu_count=1, gpu_milli=1000) for m in (3000, 1000, 2000)]
    reqs += [TaskRequest(cpu_milli=8000, memory_mib=500)]
    plain, with_memory = typical_mix(reqs, popularity=1.0), typical_mix(reqs, popularity=1.0, memory=True)
    assert [w for _, w in plain] == [w for _, w in with_memory] == [0.75, 0.25]
    assert [s.memory_mib for s, _ in plain] == [0, 0]
    assert [s.memory_mib for s, _ in with_memory] == [1000, 500]
