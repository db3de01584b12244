"""Risk scoring on scripted behaviour: a week of normal work, then the attacks it should catch."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.security.errors import SecurityConfigError
from modelplane.security.risk import Baseline, RequestEvent, RiskConfig, RiskScorer

MONDAY = 1_780_272_000.0  # 00:00 UTC
DEV = "sha256:" + "ab" * 32


def trained() -> RiskScorer:
    """A private copy of the trained scorer (training once keeps the file fast)."""
    return copy.deepcopy(_TRAINED)


def _train() -> RiskScorer:
    """Ann: five weekdays, 09:00-17:00 UTC, one request every 30 s from 10.0.0.x with her laptop, 200 kB each."""
    scorer = RiskScorer()
    for day in range(5):
        t = MONDAY + day * 86_400 + 9 * 3600
        while t < MONDAY + day * 86_400 + 17 * 3600:
            r = scorer.assess(RequestEvent("ann", t, f"10.0.0.{int(t) % 200}", DEV, 200_000))
            assert r.action == "allow", r
            t += 30
    return scorer


_TRAINED = _train()
NEXT_MORNING = MONDAY + 7 * 86_400 + 10 * 3600


def codes(r: object) -> set[str]:
    return {x.code for x in r.reasons}  # type: ignore[attr-defined]


def test_normal_request_is_not_risky() -> None:
    r = trained().assess(RequestEvent("ann", NEXT_MORNING, "10.0.0.9", DEV, 150_000))
    assert (r.score, r.action, r.reasons) == (0, "allow", ())


def test_new_device_alone_is_allowed_but_explained() -> None:
    r = trained().score(RequestEvent("ann", NEXT_MORNING, "10.0.0.9", "sha256:" + "cd" * 32))
    assert (r.score, r.action, codes(r)) == (30, "allow", {"new-device"})


def test_new_device_from_a_new_network_needs_step_up() -> None:
    r = trained().score(RequestEvent("ann", NEXT_MORNING, "203.0.113.5", "sha256:" + "cd" * 32))
    assert (r.score, r.action, codes(r)) == (55, "step_up", {"new-device", "new-source"})


def test_stolen_token_at_night_from_elsewhere_is_denied() -> None:
    night = MONDAY + 7 * 86_400 + 3 * 3600
    r = trained().score(RequestEvent("ann", night, "198.51.100.7", None))
    assert codes(r) == {"no-device", "new-source", "unusual-hour"}
    assert (r.score, r.action) == (55, "step_up")
    scorer = trained()
    result = None
    for k in range(40):  # and then it scrapes as fast as it can
        result = scorer.assess(RequestEvent("ann", night + k, "198.51.100.7", None, 1000))
    assert result is not None and result.action == "deny" and result.alert
    assert "request-burst" in codes(result) and result.score >= 80


def test_bulk_download_from_a_known_place_needs_step_up() -> None:
    scorer = trained()
    r = None
    for k in range(10):
        r = scorer.assess(RequestEvent("ann", NEXT_MORNING + 60 * k, "10.0.0.9", DEV, 50_000_000))
    assert r is not None and r.action == "step_up" and codes(r) == {"data-volume"}


def test_baselines_are_per_identity_and_learning_halves_points() -> None:
    scorer = trained()
    first = scorer.score(RequestEvent("bob", NEXT_MORNING, "10.0.0.9", DEV))
    assert first.action == "allow" and "baseline-learning" in codes(first)
    assert {r.points for r in first.reasons if r.code == "new-device"} == {15}


def test_deterministic_and_serialisable() -> None:
    a, b = trained(), trained()
    ev = RequestEvent("ann", NEXT_MORNING, "203.0.113.5", None, 10)
    assert a.score(ev) == b.score(ev)
    copy = RiskScorer()
    copy.baselines = {k: Baseline.from_dict(v.to_dict()) for k, v in a.baselines.items()}
    assert copy.score(ev) == a.score(ev)


def test_bad_config_and_input_are_named() -> None:
    with pytest.raises(SecurityConfigError, match="thresholds"):
        RiskConfig(step_up_threshold=90, deny_threshold=80)
    with pytest.raises(SecurityConfigError, match="not an IP address"):
        RiskScorer().score(RequestEvent("x", 0.0, "not-an-ip"))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 10_000),
            st.sampled_from(["10.0.0.1", "10.0.1.1", "2001:db8::1"]),
            st.sampled_from([None, "d1", "d2"]),
            st.integers(0, 10**8),
        ),
        max_size=60,
    )
)
def test_score_is_bounded_and_matches_its_reasons(steps: list[tuple[float, str, str | None, int]]) -> None:
    scorer, t = RiskScorer(), MONDAY
    for dt, ip, dev, nbytes in steps:
        t += dt
        r = scorer.assess(RequestEvent("u", t, ip, dev, nbytes))
        assert 0 <= r.score <= 100
        assert r.score == min(100, sum(x.points for x in r.reasons))
        want = "deny" if r.score >= 80 else "step_up" if r.score >= 50 else "allow"
        assert r.action == want
