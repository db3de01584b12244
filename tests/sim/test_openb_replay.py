"""The vectorised openb replay against the per-node scorers the live scheduler runs, and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.core.node import Node
from modelplane.core.placement import NodeFree
from modelplane.core.workload import TaskRequest
from modelplane.scheduler.scores.fragmentation import typical_mix
from modelplane.scheduler.scores.gpuclustering import GpuClusteringScorer
from modelplane.scheduler.scoring import NodeScorer, ScoreContext, create_scorer
from modelplane.sim.openb import MAX_TAGS, MEMORY_AWARE, Replay, inflated_order, replay

SCORED = [
    "dotprod", "gpuclustering", "gpupacking", "bestfit", "fgd", "fgd_plus", "fgd_cpu_pack", "fgd_cpu_aware",
    "fgd_cpu_excess", "fgd_fit_excess",
]


def random_cluster(rng: np.random.Generator, n: int) -> list[Node]:
    nodes = []
    for i in range(n):
        g = int(rng.choice([0, 1, 2, 4, 8]))
        nodes.append(
            Node(
                name=f"n{i:03d}",
                cpu_milli=int(rng.choice([16_000, 32_000, 96_000])),
                memory_mib=int(rng.choice([65_536, 262_144])),
                gpu_model=str(rng.choice(["G2", "T4"])) if g else None,
                gpu_count=g,
            )
        )
    return nodes


def random_requests(rng: np.random.Generator, n: int, memory_heavy: bool = False) -> list[TaskRequest]:
    """Tasks of random shapes; ``memory_heavy`` ones ask 8-48 GiB per device, so that memory, not
    CPU or GPU, runs out first on the 64 GiB nodes of ``random_cluster``."""
    out = []
    for _ in range(n):
        kind = rng.integers(5)
        cpu = int(rng.choice([1000, 4000, 8000, 12_000]))
        models = ("T4",) if rng.random() < 0.15 else ()
        mem = int(rng.choice([8192, 16_384, 49_152])) if memory_heavy else 2048
        if kind == 0:
            out.append(TaskRequest(cpu_milli=cpu, memory_mib=mem))
        elif kind in (1, 2):
            out.append(TaskRequest(cpu_milli=cpu, memory_mib=mem, gpu_count=1, gpu_milli=int(rng.choice([200, 250, 500, 700])), gpu_models=models))
        else:
            g = int(rng.choice([1, 2, 4, 8]))
            out.append(TaskRequest(cpu_milli=cpu, memory_mib=2 * mem * g if memory_heavy else 4096, gpu_count=g, gpu_milli=1000, gpu_models=models))
    return out


def node_free(r: Replay, i: int) -> NodeFree:
    s = r.state
    return NodeFree(s.nodes[i], int(s.cpu[i]), int(s.mem[i]), s.device_list(i))


TAG_NAMES = ["share"] + [f"{k}-gpu" for k in range(1, MAX_TAGS)]


@pytest.mark.parametrize(
    ("policy", "memory_heavy"), [(p, False) for p in SCORED] + [("fgd_cpu_excess", True), ("fgd_fit_excess", True)]
)
def test_vectorised_scores_equal_the_per_node_scorers(policy: str, memory_heavy: bool) -> None:
    rng = np.random.default_rng(7)
    nodes = random_cluster(rng, 40)
    reqs = random_requests(rng, 160, memory_heavy)
    mix = typical_mix(reqs, memory=policy in MEMORY_AWARE)
    r = Replay(nodes, policy, mix, seed=3)
    index = {n.name: i for i, n in enumerate(nodes)}
    scorer: NodeScorer
    if policy == "gpuclustering":
        scorer = GpuClusteringScorer(lambda f: {TAG_NAMES[k]: int(v) for k, v in enumerate(r.state.tags[index[f.node.name]]) if v})
    else:
        scorer = create_scorer(policy)
    ctx = ScoreContext(workload_mix=mix)
    checked = 0
    for req in reqs:
        idx = r.feasible(req)
        py = {i: scorer.score(node_free(r, i), req, ctx) for i in range(len(nodes))}
        assert {i for i, v in py.items() if v is not None} == {int(i) for i in idx}
        if len(idx):
            vec = r._scorers[policy](req, idx)
            for i, v in zip(idx, vec, strict=True):
                got = py[int(i)]
                assert got is not None and got[0] == float(v), (policy, req, r.state.device_list(int(i)))
                if policy.startswith("fgd"):  # the replay's device choice is the live scorer's
                    assert r.devices_on(int(i), req) == got[1], (policy, req, r.state.device_list(int(i)))
                checked += 1
        r.place(req)
    assert checked > 500


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), policy=st.sampled_from(["random", *SCORED]))
def test_replay_never_overallocates_and_allocates_at_most_what_arrived(seed: int, policy: str) -> None:
    rng = np.random.default_rng(seed)
    nodes = random_cluster(rng, 12)
    reqs = random_requests(rng, 40)
    if sum(r.total_gpu_milli for r in reqs) == 0:
        reqs.append(TaskRequest(cpu_milli=1000, gpu_count=1, gpu_milli=500))
    cap = sum(n.gpu_count for n in nodes) * 1000
    if cap == 0:
        return
    if not any(r.wants_gpu for r in reqs):
        return
    result = replay(nodes, reqs, policy, seed, ratio=1.3)
    assert np.all(np.diff(result.arrived_milli) >= 0)
    assert np.all(result.allocated_milli <= result.arrived_milli)
    assert result.allocated_milli[-1] <= cap
    assert result.placed + result.failed == len(result.arrived_milli) - 1


def test_inflation_reaches_the_target_without_passing_it() -> None:
    reqs = [TaskRequest(cpu_milli=1, gpu_count=1, gpu_milli=m) for m in (1000, 500, 250)] * 10
    cap = 20_000
    order = inflated_order(reqs, cap, 1.3, seed=42)
    total = sum(reqs[j].total_gpu_milli for j in order)
    assert sorted(order[:30]) == list(range(30))  # every original pod once, shuffled
    assert 1.3 * cap - 1000 < total <= 1.3 * cap
    assert order == inflated_order(reqs, cap, 1.3, seed=42)
    assert order != inflated_order(reqs, cap, 1.3, seed=43)
    down = inflated_order(reqs, 10_000, 1.3, seed=1)  # 17.5 GPUs requested > 13 allowed: random pods go
    assert len(set(down)) == len(down) and sum(reqs[j].total_gpu_milli for j in down) <= 13_000
    with pytest.raises(ValueError, match="no pod"):
        inflated_order([TaskRequest(cpu_milli=1)], 1000, 1.3, seed=1)
