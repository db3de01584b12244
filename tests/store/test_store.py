"""The store contract, run on SQLite and on a real PostgreSQL server."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from modelplane.core.errors import Conflict, InvalidTransition, NotFound
from modelplane.core.job import JobState
from modelplane.core.node import NodeState
from modelplane.core.placement import Placement, TaskAssignment
from tests.helpers import gpu_node, queue, training_doc


def test_nodes_and_queues_round_trip(store):
    store.upsert_node(gpu_node("n1", taints=[{"key": "k", "value": "v", "effect": "NoSchedule"}]))
    store.upsert_queue(queue("training", cohort="c", borrowingLimit={"NVIDIA-A100": 4}))
    n = store.get_node("n1")
    assert n.state is NodeState.READY and n.to_node().gpu_count == 8
    assert n.to_node().taints[0].key == "k"
    assert store.get_queue("training").spec.borrowing_limit == {"NVIDIA-A100": 4}
    with pytest.raises(NotFound):
        store.get_node("nope")


def test_optimistic_concurrency_on_nodes(store):
    rec = store.upsert_node(gpu_node("n1"))
    store.set_node_state("n1", NodeState.CORDONED, expected_version=rec.resource_version)
    with pytest.raises(Conflict) as e:
        store.set_node_state("n1", NodeState.DRAINING, expected_version=rec.resource_version)
    assert "retry" in e.value.hint


def test_create_job_validates_queue_and_names(store):
    with pytest.raises(NotFound) as e:
        store.create_job(training_doc(queue="nope"))
    assert "queue" in e.value.message
    store.upsert_queue(queue())
    store.create_job(training_doc("a"))
    with pytest.raises(Conflict) as e:
        store.create_job(training_doc("a"))
    assert e.value.field == "metadata.name"


def test_idempotent_create(store):
    store.upsert_queue(queue())
    a = store.create_job(training_doc("a"), request_id="req-1")
    b = store.create_job(training_doc("a"), request_id="req-1")
    assert a.id == b.id and store.count_jobs() == 1


def test_transitions_write_events_and_placements(store):
    store.upsert_queue(queue())
    job = store.create_job(training_doc("a", restartPolicy={"maxRestarts": 1}))
    p = Placement(job.id, (TaskAssignment("worker", 0, 0, "n1", 1000, 1024, (0,), 1000),))
    job = store.transition_job(job.id, JobState.ADMITTED, "Scheduled", expected_version=job.resource_version,
                               placement=p)
    assert job.placement == p
    job = store.transition_job(job.id, JobState.RUNNING, "Started")
    assert job.started_at is not None
    job = store.transition_job(job.id, JobState.FAILED, "TaskFailed", "rank 0 exit 1")
    assert job.state is JobState.RECOVERING and job.restarts == 1  # the state machine redirected it
    job = store.transition_job(job.id, JobState.PENDING, "Requeued")
    assert job.placement is None
    with pytest.raises(InvalidTransition):
        store.transition_job(job.id, JobState.SUCCEEDED, "x")
    events = store.list_events(job.id)
    assert [e.to_state for e in events] == ["Pending", "Admitted", "Running", "Recovering", "Pending"]


def test_stale_write_is_refused(store):
    store.upsert_queue(queue())
    job = store.create_job(training_doc("a"))
    store.update_job_fields(job.id, cancel_requested=True)
    with pytest.raises(Conflict):
        store.transition_job(job.id, JobState.ADMITTED, "Scheduled", expected_version=job.resource_version)


def test_concurrent_writers_never_both_win(store):
    store.upsert_queue(queue())
    job = store.create_job(training_doc("a"))

    def admit(_: int) -> str:
        try:
            store.transition_job(job.id, JobState.ADMITTED, "Scheduled", expected_version=job.resource_version)
            return "won"
        except (Conflict, InvalidTransition):
            return "lost"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(admit, range(8)))
    assert results.count("won") == 1
    assert [e.to_state for e in store.list_events(job.id)].count("Admitted") == 1


def test_list_filters_and_pagination(store):
    store.upsert_queue(queue())
    store.upsert_queue(queue("other"))
    for i in range(7):
        store.create_job(training_doc(f"j{i}", queue="training" if i % 2 else "other"))
    seen, cursor = [], None
    while True:
        page, cursor = store.list_jobs(limit=3, after=cursor)
        seen += [j.name for j in page]
        if cursor is None:
            break
    assert sorted(seen) == [f"j{i}" for i in range(7)] and len(seen) == 7
    assert {j.name for j in store.list_jobs(queue="other")[0]} == {"j0", "j2", "j4", "j6"}


def test_tasks(store):
    store.upsert_queue(queue())
    job = store.create_job(training_doc("a"))
    store.put_task(job.id, 0, pod_set="worker", node="n1", phase="Starting")
    store.put_task(job.id, 0, pod_set="worker", node="n1", phase="Running", handle="local:1:2")
    assert [(t.phase, t.handle) for t in store.list_tasks(job.id)] == [("Running", "local:1:2")]
