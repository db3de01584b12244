from __future__ import annotations

import pytest

from modelplane.autoscale.nodegroup import (
    Drain,
    NodeGroup,
    NodeGroupAutoscaler,
    NodePhase,
    NodeView,
    Provision,
    Terminate,
)
from modelplane.autoscale.replay import ReplayConfig, StaticPolicy, replay
from modelplane.autoscale.replica import Bounds, QueueAwarePolicy

OD = NodeGroup("od", 8, 8.0, provisioning_delay_s=180.0)
SPOT = NodeGroup("spot", 8, 2.8, spot=True, notice_s=120.0)


def ready(i: str, group: str = "od", used: int = 0, interruption_at: float | None = None) -> NodeView:
    return NodeView(i, group, NodePhase.READY, used, interruption_at)


def test_provisions_enough_nodes_with_spot_share() -> None:
    nas = NodeGroupAutoscaler([OD, SPOT], spot_fraction=0.5)
    acts = nas.plan(0.0, [], 32)
    assert sorted((a.group, a.count) for a in acts if isinstance(a, Provision)) == [("od", 2), ("spot", 2)]
    # Provisioning nodes count as coming capacity: no second wave.
    views = [NodeView(f"n{i}", g, NodePhase.PROVISIONING) for i, g in enumerate(["od", "od", "spot", "spot"])]
    assert nas.plan(10.0, views, 32) == []


def test_scale_down_after_idle_most_expensive_first_and_keeps_demand() -> None:
    nas = NodeGroupAutoscaler([OD, SPOT], scale_down_idle_s=600.0)
    nodes = [ready("a", "od"), ready("b", "spot"), ready("c", "od", used=8)]
    assert nas.plan(0.0, nodes, 8) == []
    assert nas.plan(599.0, nodes, 8) == []
    acts = nas.plan(600.0, nodes, 8)
    assert acts == [Terminate("a", "idle 600 s"), Terminate("b", "idle 600 s")]
    # With demand for 16 GPUs only one idle node may go: the on-demand one.
    nas2 = NodeGroupAutoscaler([OD, SPOT], scale_down_idle_s=0.0)
    assert [a.node_id for a in nas2.plan(0.0, nodes, 16) if isinstance(a, Terminate)] == ["a"]


def test_spot_notice_drains_and_replaces_before_death_then_backs_off_spot() -> None:
    nas = NodeGroupAutoscaler([OD, SPOT], spot_fraction=1.0, spot_backoff_s=900.0)
    nodes = [ready("s1", "spot", used=8, interruption_at=120.0)]
    acts = nas.plan(0.0, nodes, 8)
    assert Drain("s1", "spot interruption at 120") in acts
    assert Provision("od", 1) in acts  # spot backs off after an interruption
    drained = [NodeView("s1", "spot", NodePhase.DRAINING, 0, 120.0), NodeView("n2", "od", NodePhase.PROVISIONING)]
    assert Terminate("s1", "drained") in nas.plan(60.0, drained, 8)
    assert Provision("spot", 1) in nas.plan(2000.0, [], 8)


def test_bad_groups_refused() -> None:
    with pytest.raises(ValueError):
        NodeGroup("x", 0, 1.0)
    with pytest.raises(ValueError):
        NodeGroupAutoscaler([])


def _burst_trace() -> tuple[list[float], list[float]]:
    arrivals, service = [], []
    t = 0.0
    for minute in range(60):
        rate = 2.0 if 20 <= minute < 30 else 0.1  # requests per second
        n = int(60 * rate)
        for k in range(n):
            arrivals.append(t + k * 60.0 / n)
            service.append(5.0)
        t += 60.0
    return arrivals, service


def test_replay_autoscaler_uses_fewer_gpu_hours_than_static_peak() -> None:
    arr, svc = _burst_trace()
    groups = [NodeGroup("od", 1, 1.0, provisioning_delay_s=30.0)]
    static = replay(arr, svc, StaticPolicy(12), NodeGroupAutoscaler(groups), [10.0], ReplayConfig(initial_replicas=12, slo_wait_s=30))
    ours = replay(arr, svc, QueueAwarePolicy(1.0, Bounds(1, 40)), NodeGroupAutoscaler(groups, scale_down_idle_s=60),
                  [10.0], ReplayConfig(initial_replicas=1, slo_wait_s=30))
    assert static.unfinished == ours.unfinished == 0
    assert static.slo_attainment == 1.0
    assert ours.gpu_hours < static.gpu_hours
    assert ours.peak_replicas > 1
    assert ours.slo_attainment > 0.8


def test_replay_spot_kills_requeue_running_requests_and_all_finish() -> None:
    arr = [float(i) for i in range(0, 3600, 4)]
    svc = [60.0] * len(arr)
    nas = NodeGroupAutoscaler([NodeGroup("spot", 1, 0.3, spot=True, provisioning_delay_s=30.0, notice_s=30.0)], spot_fraction=1.0)
    res = replay(arr, svc, StaticPolicy(20), nas, [5.0], ReplayConfig(spot_interruptions_per_hour=3.0, seed=1))
    assert res.unfinished == 0
    assert res.requeued_by_spot_kills > 0  # the kills did hit running requests, and they were served later
    assert res.spot_gpu_hours == pytest.approx(res.gpu_hours)


def test_replay_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError):
        replay([0.0], [], StaticPolicy(1), NodeGroupAutoscaler([OD]), [1.0])
