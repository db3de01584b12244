from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelplane.core.errors import InvalidSpec
from modelplane.train.policy import MAX_INTERVAL_S, SavePolicy, mtbf_from_rate, young_interval


def test_young_interval_known_value() -> None:
    # 6.3 s blocking save (DCP async, 7B) and a 3 h MTBF: sqrt(2 * 6.3 * 10800) = 368.9 s
    assert young_interval(6.3, 3 * 3600) == pytest.approx(math.sqrt(2 * 6.3 * 10800))
    assert young_interval(148.8, 1e9) == MAX_INTERVAL_S


@given(st.floats(0, 1e4), st.floats(1, 1e7), st.floats(1, 1e4))
def test_young_interval_is_monotone_and_capped(cost: float, mtbf: float, extra: float) -> None:
    a = young_interval(cost, mtbf)
    assert 0 <= a <= MAX_INTERVAL_S
    assert young_interval(cost + extra, mtbf) >= a
    assert young_interval(cost, mtbf + extra) >= a


def test_mtbf_from_cluster_failure_rate() -> None:
    # Llama 3: 466 interruptions in 54 days on 16,384 GPUs -> a job on all of them fails every ~2.8 h
    mtbf = mtbf_from_rate(466, 54 * 24 * 16384, 16384)
    assert mtbf / 3600 == pytest.approx(54 * 24 / 466)
    with pytest.raises(InvalidSpec):
        mtbf_from_rate(0, 10, 1)
    with pytest.raises(InvalidSpec, match="MTBF"):
        young_interval(1, 0)


def test_wall_time_trigger_follows_measured_cost() -> None:
    p = SavePolicy(mtbf_s=3600.0)
    p.start(now=0.0)
    assert p.current_interval() == MAX_INTERVAL_S  # nothing measured yet
    assert p.due(1, now=MAX_INTERVAL_S - 1) is None
    assert p.due(2, now=MAX_INTERVAL_S) == "wall_time"
    p.record_save(2, now=MAX_INTERVAL_S, cost_s=2.0)
    interval = math.sqrt(2 * 2.0 * 3600)
    assert p.current_interval() == pytest.approx(interval)
    assert p.due(3, now=MAX_INTERVAL_S + interval - 0.1) is None
    assert p.due(4, now=MAX_INTERVAL_S + interval) == "wall_time"


def test_step_trigger_and_no_double_save() -> None:
    p = SavePolicy(every_steps=5)
    assert [s for s in range(1, 16) if p.due(s, now=0.0)] == [5, 10, 15]
    p.record_save(10, now=0.0, cost_s=1.0)
    assert p.due(10, now=0.0) is None


def test_bad_policy_arguments() -> None:
    with pytest.raises(InvalidSpec, match="every_steps"):
        SavePolicy(every_steps=-1)
    with pytest.raises(InvalidSpec, match="interval_s"):
        SavePolicy(interval_s=0)
