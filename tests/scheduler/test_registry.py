"""Schedulers by name, and the default working from a bare SchedulingInput as the control plane builds it."""

from __future__ import annotations

import pytest

from modelplane.scheduler.first_fit import FirstFitScheduler
from modelplane.scheduler.interface import SchedulingInput
from modelplane.scheduler.policy import PolicyScheduler
from modelplane.scheduler.registry import UnknownScheduler, create_scheduler, scheduler_names
from tests.scheduler.factories import TinyScorer, node, queue, request, workload


def test_names() -> None:
    assert scheduler_names() == ["default", "easy-backfill", "fifo", "first-fit", "priority", "sjf"]
    assert isinstance(create_scheduler("first-fit"), FirstFitScheduler)


@pytest.mark.parametrize("name", ["default", "easy-backfill", "fifo", "priority", "sjf", "first-fit"])
def test_every_scheduler_places_a_simple_stream(name: str) -> None:
    s = create_scheduler(name)
    nodes = [node("a", switch="s0"), node("b", switch="s1"), node("c", model="AMD-MI250", switch="s1")]
    pending = [workload("gang", count=2, req=request(8, models=("NVIDIA-A100",)), created_at=0),
               workload("frac", req=request(1, 500), created_at=1),
               workload("cpu", req=request(0), created_at=2)]
    r = s.schedule(SchedulingInput(nodes, {"q": queue("q")}, [], pending))
    assert sorted(p.job_id for p in r.placements) == ["cpu", "frac", "gang"]
    assert r.pending_reasons == {}


def test_default_uses_the_published_default_scorer() -> None:
    from modelplane.scheduler import scores

    s = create_scheduler("default")
    assert isinstance(s, PolicyScheduler)
    assert s.scorer is not None and s.scorer.name == scores.DEFAULT_SCORER


def test_default_scorer_is_the_one_the_openb_replay_measures() -> None:
    """The figure that justifies the default (benchmarks/fgd_openb.py) must be able to replay it."""
    from modelplane.scheduler.registry import default_scorer_name
    from modelplane.sim.openb import POLICIES

    assert default_scorer_name() in POLICIES


def test_options_reach_the_policy() -> None:
    s = create_scheduler("default", scorer=TinyScorer(), max_candidates=None, order="priority", preemption=False)
    assert isinstance(s, PolicyScheduler)
    assert s.options.order == "priority" and not s.options.preemption
    assert s.options.placement.max_candidates is None
    assert s.scorer is not None and s.scorer.name == "tiny"
    named = create_scheduler("easy-backfill", scorer="bestfit")
    assert isinstance(named, PolicyScheduler) and named.scorer is not None and named.scorer.name == "bestfit"


def test_bad_names_and_options_say_what_to_do() -> None:
    with pytest.raises(UnknownScheduler) as e:
        create_scheduler("slurm")
    assert "choose one of: default" in str(e.value)
    with pytest.raises(UnknownScheduler) as e:
        create_scheduler("default", backfil=True)
    assert "backfil" in e.value.message and "backfill" in e.value.hint
    with pytest.raises(UnknownScheduler):
        create_scheduler("default", scorer="nope")
    with pytest.raises(UnknownScheduler):
        create_scheduler("default", order="lifo")
    with pytest.raises(UnknownScheduler):
        create_scheduler("first-fit", scorer="fgd")
