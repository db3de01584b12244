from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.autoscale.replica import (
    Bounds,
    HpaPolicy,
    KpaPolicy,
    Observation,
    QueueAwarePolicy,
    pick_scale_down,
)


def obs(now: float, ready: int, in_flight: float, waiting: float = 0.0, starting: int = 0) -> Observation:
    return Observation(now, ready, starting, in_flight, waiting)


def test_kpa_stable_desire_is_concurrency_over_70pct_target() -> None:
    p = KpaPolicy(10.0, Bounds(0, 100))
    d = None
    for t in range(0, 62, 2):
        d = p.decide(obs(t, 5, 35.0))
    assert d is not None and d.desired == math.ceil(35 / 7)
    assert not d.panic


def test_kpa_panics_on_a_burst_and_does_not_scale_down_while_panicking() -> None:
    p = KpaPolicy(10.0, Bounds(0, 100))
    for t in range(0, 60, 2):
        p.decide(obs(t, 2, 10.0))
    burst = [p.decide(obs(t, 2, 100.0)) for t in range(60, 66, 2)]
    assert burst[-1].panic
    assert burst[-1].desired >= math.ceil(100 / 7) - 1
    peak = burst[-1].desired
    # Load vanishes: still panicking for a stable window, and never below the peak meanwhile.
    calm = [p.decide(obs(t, peak, 0.0)) for t in range(66, 120, 2)]
    assert all(d.desired >= peak for d in calm)
    after = [p.decide(obs(t, peak, 0.0)) for t in range(120, 300, 2)]
    assert after[-1].desired < peak


def test_kpa_scale_down_at_most_halves_per_tick_and_reaches_zero_after_grace() -> None:
    p = KpaPolicy(1.0, Bounds(0, 100), stable_s=6.0, panic_s=2.0)
    current = 40
    for t in range(0, 10, 2):
        current = p.decide(obs(t, current, 28.0)).desired
    seen = []
    for t in range(10, 200, 2):
        d = p.decide(obs(t, current, 0.0)).desired
        assert d >= current // 2
        seen.append(d)
        current = d
    assert seen[-1] == 0
    assert 1 in seen  # the grace period holds one replica before zero


def test_hpa_tolerance_stabilization_and_sync() -> None:
    p = HpaPolicy(10.0, Bounds(1, 100))
    assert p.decide(obs(0, 4, 43.0)).desired == 4  # 1.075 within 10%
    assert p.decide(obs(5, 4, 80.0)).desired == 4  # between syncs
    assert p.decide(obs(15, 4, 80.0)).desired == 8
    assert p.decide(obs(30, 8, 8.0)).desired == 8  # down only to the window's highest recommendation
    assert p.decide(obs(330, 8, 8.0)).desired == 1  # 300 s later
    up = HpaPolicy(1.0, Bounds(1, 1000))
    assert up.decide(obs(0, 2, 500.0)).desired == 6  # max(2x, +4)


def test_queue_aware_reacts_to_a_backlog_in_one_tick() -> None:
    ours, kpa = QueueAwarePolicy(1.0, Bounds(1, 100)), KpaPolicy(1.0, Bounds(1, 100))
    for t in range(0, 60, 2):
        ours.decide(obs(t, 2, 1.0))
        kpa.decide(obs(t, 2, 1.0))
    o = ours.decide(obs(60, 2, 2.0, waiting=20.0))
    k = kpa.decide(obs(60, 2, 2.0, waiting=20.0))
    assert o.desired >= math.ceil(22 / 0.7)
    assert o.desired > k.desired


def test_queue_aware_waits_before_scaling_down() -> None:
    p = QueueAwarePolicy(1.0, Bounds(1, 100), downscale_delay_s=300.0)
    for t in range(0, 60, 2):
        p.decide(obs(t, 10, 7.0))
    early = p.decide(obs(200, 10, 0.0)).desired
    late = [p.decide(obs(t, 10, 0.0)).desired for t in range(200, 400, 2)][-1]
    assert early == 10
    assert late < 10


def test_pick_scale_down_takes_least_busy() -> None:
    assert pick_scale_down({"a": 3, "b": 0, "c": 1, "d": 0}, 3) == ["b", "d", "c"]
    assert pick_scale_down({"a": 1}, 0) == []


@settings(max_examples=60, deadline=None)
@given(
    policy=st.sampled_from(["hpa", "kpa", "ours"]),
    loads=st.lists(st.tuples(st.floats(0, 500), st.floats(0, 200)), min_size=1, max_size=80),
    lo=st.integers(0, 3),
    span=st.integers(1, 50),
)
def test_decisions_stay_within_bounds(policy: str, loads: list[tuple[float, float]], lo: int, span: int) -> None:
    bounds = Bounds(lo, lo + span)
    p = {"hpa": HpaPolicy(2.0, bounds), "kpa": KpaPolicy(2.0, bounds), "ours": QueueAwarePolicy(2.0, bounds)}[policy]
    current = lo
    for i, (inflight, waiting) in enumerate(loads):
        d = p.decide(obs(2.0 * i, current, inflight, waiting))
        assert max(1 if policy == "hpa" else 0, lo) <= d.desired <= lo + span
        current = d.desired


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        KpaPolicy(0.0)
    with pytest.raises(ValueError):
        HpaPolicy(-1.0)


def test_policy_from_manifest_spec() -> None:
    from modelplane.autoscale.spec import policy_from_spec
    from modelplane.core.errors import InvalidSpec
    from modelplane.core.spec import AutoscalingSpec

    spec = AutoscalingSpec(minReplicas=0, maxReplicas=5, targetConcurrency=2.0)
    for kind in ("ours", "kpa", "hpa"):
        p = policy_from_spec(spec, kind)
        assert p.name == kind
        assert p.decide(obs(0.0, 1, 1000.0)).desired <= 5
    with pytest.raises(InvalidSpec):
        policy_from_spec(spec, "magic")
    with pytest.raises(InvalidSpec):
        policy_from_spec(AutoscalingSpec(minReplicas=4, maxReplicas=2), "ours")


def test_idle_deployment_at_zero_stays_at_zero_and_wakes_on_a_request() -> None:
    for p in (KpaPolicy(1.0, Bounds(0, 10)), QueueAwarePolicy(1.0, Bounds(0, 10))):
        assert [p.decide(obs(t, 0, 0.0)).desired for t in range(0, 20, 2)] == [0] * 10
        assert p.decide(obs(20, 0, 0.0, waiting=1.0)).desired >= 1
