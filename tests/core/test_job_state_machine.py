import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelplane.core.errors import InvalidTransition
from modelplane.core.job import ALLOWED, TERMINAL, JobState, JobStatus, decide


def test_happy_path():
    s = JobStatus()
    for target in (JobState.ADMITTED, JobState.RUNNING, JobState.SUCCEEDED):
        s = decide(s, target, "r").status
    assert s.state is JobState.SUCCEEDED


def test_failure_with_restarts_left_becomes_recovering():
    s = JobStatus(JobState.RUNNING, restarts=0, max_restarts=2)
    t = decide(s, JobState.FAILED, "TaskFailed", "rank 1 failed")
    assert t.to_state is JobState.RECOVERING and t.status.restarts == 1
    assert "restart 1 of 2" in t.message
    s = JobStatus(JobState.RUNNING, restarts=2, max_restarts=2)
    assert decide(s, JobState.FAILED, "TaskFailed").to_state is JobState.FAILED


def test_lost_node_without_budget_fails():
    s = JobStatus(JobState.RUNNING, restarts=0, max_restarts=0)
    t = decide(s, JobState.RECOVERING, "NodeLost", "node a gone")
    assert t.to_state is JobState.FAILED and "maxRestarts" in t.message


def test_terminal_states_are_final():
    for end in TERMINAL:
        with pytest.raises(InvalidTransition) as e:
            decide(JobStatus(end), JobState.RUNNING, "x")
        assert "ended" in e.value.hint


@given(st.lists(st.sampled_from(list(JobState)), max_size=30), st.integers(0, 3))
def test_any_sequence_of_proposals_stays_inside_the_graph(proposals, budget):
    s = JobStatus(max_restarts=budget)
    for p in proposals:
        try:
            t = decide(s, p, "r")
        except InvalidTransition:
            continue
        assert t.to_state in ALLOWED[s.state]
        assert t.status.restarts <= budget
        s = t.status
