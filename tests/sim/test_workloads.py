"""Trace jobs to workloads, pools and queues."""

from __future__ import annotations

import pytest

from modelplane.sim.workloads import GPU_MODEL, gang_workload, gpu_pool, proportional_queues


@pytest.mark.parametrize(("gpus", "tasks", "per"), [(1, 1, 1), (3, 1, 3), (8, 1, 8), (12, 3, 4), (24, 3, 8), (128, 16, 8)])
def test_gangs_split_into_whole_node_tasks(gpus: int, tasks: int, per: int) -> None:
    w = gang_workload("j", "q", gpus, 5.0, 60.0)
    (ps,) = w.pod_sets
    assert (ps.count, ps.request.gpu_count) == (tasks, per)
    assert w.total_gpu_milli == gpus * 1000 and w.gang and w.created_at == 5.0


def test_pool_topology_groups_switches() -> None:
    nodes = gpu_pool(70)
    assert len(nodes) == 70 and all(n.gpu_count == 8 and n.gpu_model == GPU_MODEL for n in nodes)
    switches = {n.topology.switch for n in nodes}
    assert len(switches) == 9  # 8 nodes per switch
    assert nodes[0].topology.group == "g0" and nodes[-1].topology.group == "g2"


def test_quota_proportional_to_shares_and_zero_for_unlisted() -> None:
    qs = proportional_queues({"a": 3, "b": 1}, 400, ["a", "b", "c"])
    assert qs["a"].quota[GPU_MODEL] == 300 and qs["b"].quota[GPU_MODEL] == 100 and qs["c"].quota[GPU_MODEL] == 0
    assert {q.cohort for q in qs.values()} == {"all"} and all(q.borrowing_limit is None for q in qs.values())
