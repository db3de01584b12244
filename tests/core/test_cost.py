"""Cost accounting: share of each node's price by the devices (or CPU) a task holds, for as long as held."""

import pytest

from modelplane.core.cost import JobUsage, cost_report
from modelplane.core.node import Node
from modelplane.core.placement import Placement, TaskAssignment

NODES = {
    "gpu": Node("gpu", 64000, 512000, "NVIDIA-A100", 8, price_per_hour=32.0),
    "spot": Node("spot", 64000, 512000, "NVIDIA-A100", 8, price_per_hour=8.0, spot=True),
    "cpu": Node("cpu", 32000, 128000, price_per_hour=2.0),
}


def usage(name, team, node, devices, milli=1000, cpu=1000, start=0.0, end=3600.0):
    a = TaskAssignment("w", 0, 0, node, cpu, 1024, tuple(range(devices)), milli)
    return JobUsage(name, name, team, "q-" + team, Placement(name, (a,)), start, end)


def test_shares_windows_spot_and_idle():
    r = cost_report([
        usage("a", "t1", "gpu", 2),                       # 2 of 8 GPUs for 1 h: 2 GPU-h, 8.0
        usage("b", "t1", "spot", 1, milli=500),           # half a GPU on spot: 0.5 GPU-h, 0.5
        usage("c", "t2", "cpu", 0, cpu=8000, end=None),   # a quarter of the CPU node, still running
        usage("old", "t2", "gpu", 8, start=-7200, end=-3600),  # outside the window: not counted
    ], NODES, since=0.0, until=3600.0)
    assert r.by_job["a"].gpu_hours == pytest.approx(2.0) and r.by_job["a"].cost == pytest.approx(8.0)
    assert r.by_job["b"].cost == pytest.approx(0.5) and r.by_job["b"].spot_cost == pytest.approx(0.5)
    assert r.by_job["c"].cost == pytest.approx(0.5) and r.by_job["c"].gpu_hours == 0
    assert "old" not in r.by_job
    assert r.by_team["t1"].cost == pytest.approx(8.5) and r.by_queue["q-t2"].cost == pytest.approx(0.5)
    assert r.pool_cost == pytest.approx(42.0) and r.idle_cost == pytest.approx(42.0 - 9.0)


def test_a_job_partly_inside_the_window_pays_for_its_part():
    r = cost_report([usage("a", "t", "gpu", 8, start=-1800, end=1800)], NODES, since=0.0, until=3600.0)
    assert r.by_job["a"].cost == pytest.approx(16.0)
