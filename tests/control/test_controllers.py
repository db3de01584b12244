"""Controllers driving real processes through the local backend, on both databases."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelplane.backends.local import LocalBackend
from modelplane.control.base import ReconcileLoop
from modelplane.control.jobs import JobController
from modelplane.control.nodes import NodeHealthController
from modelplane.control.scheduling import SchedulerController
from modelplane.core.job import JobState
from modelplane.core.node import NodeState
from modelplane.platform import make_scheduler
from modelplane.store import JobRecord, Store
from tests.helpers import gpu_node, queue, training_doc

PY = sys.executable


class Harness:
    def __init__(self, store: Store, state_dir: Path) -> None:
        self.store = store
        self.state_dir = state_dir
        self.backend = LocalBackend(state_dir)
        self.loop = self._loop()

    def _loop(self) -> ReconcileLoop:
        return ReconcileLoop([
            SchedulerController(self.store, make_scheduler("default"), time.time),
            JobController(self.store, self.backend, time.time, stop_grace_seconds=2),
        ])

    def restart(self) -> None:
        """A fresh backend and fresh controllers, as after a crash of the control plane."""
        self.backend = LocalBackend(self.state_dir)
        self.loop = self._loop()

    def until(self, name: str, pred: Callable[[JobRecord], bool], timeout: float = 60) -> JobRecord:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.loop.run_once()
            job = self.store.get_job(name)
            if pred(job):
                return job
            time.sleep(0.1)
        job = self.store.get_job(name)
        raise AssertionError(f"job {name} stuck in {job.state}: {job.reason} {job.message} {job.pending_reason}")


@pytest.fixture
def h(store: Store, tmp_path: Path) -> Harness:
    store.upsert_node(gpu_node("n1", switch="s0"))
    store.upsert_node(gpu_node("n2", switch="s1"))
    store.upsert_node(gpu_node("amd-0", model="AMD-MI250", switch="s1"))
    store.upsert_queue(queue())
    return Harness(store, tmp_path / "backend")


def state_is(*states: JobState) -> Callable[[JobRecord], bool]:
    return lambda j: j.state in states


def test_two_rank_job_runs_to_success_with_the_right_environment(h: Harness):
    code = "import os; print('rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'], os.environ['MODELPLANE_NODE'], os.environ.get('HIP_VISIBLE_DEVICES'))"
    doc = training_doc("env", command=[PY, "-c", code])
    doc["spec"]["template"]["resources"]["acceleratorModel"] = "AMD-MI250"
    h.store.create_job(doc)
    job = h.until("env", state_is(JobState.SUCCEEDED))
    assert [a.node for a in job.placement.assignments] == ["amd-0", "amd-0"]
    logs = [h.backend.read_logs(job.id, r, 0)[0] for r in (0, 1)]
    assert "rank 0 of 2 amd-0" in logs[0] and "rank 1 of 2 amd-0" in logs[1]
    devices = {line.split()[-1] for line in logs}
    assert len(devices) == 2  # each rank sees its own device
    assert [e.to_state for e in h.store.list_events(job.id)] == ["Pending", "Admitted", "Running", "Succeeded"]


def test_failed_task_is_retried_then_fails(h: Harness):
    h.store.create_job(training_doc("bad", replicas=1, command=[PY, "-c", "import sys; sys.exit(3)"],
                                   restartPolicy={"maxRestarts": 1}))
    job = h.until("bad", state_is(JobState.FAILED))
    assert job.restarts == 1 and "exit" in job.message.lower()
    states = [e.to_state for e in h.store.list_events(job.id)]
    assert states == ["Pending", "Admitted", "Running", "Recovering", "Pending", "Admitted", "Running", "Failed"]


def _federated_doc(name: str, server: str, parties: dict[str, str]) -> dict:
    def tmpl(code: str) -> dict:
        return {"command": [PY, "-c", code], "resources": {"cpu": "500m", "memory": "256Mi"}}

    return {"apiVersion": "modelplane/v1", "kind": "FederatedJob", "metadata": {"name": name},
            "spec": {"queue": "training", "server": tmpl(server),
                     "parties": [{"name": n, "template": tmpl(c)} for n, c in parties.items()]}}


def test_a_federation_survives_a_lost_party_and_the_server_decides(h: Harness, monkeypatch: pytest.MonkeyPatch):
    """Secure aggregation finishes rounds without a dropped party, so a party's death is an event,
    not the job's end; the server's exit decides. Parties may finish their own results after the
    server (gamma); those still running after the grace period are stopped (beta)."""
    import modelplane.control.jobs as jobs_module

    monkeypatch.setattr(jobs_module, "FEDERATION_PARTY_GRACE_S", 8.0)
    h.store.create_job(_federated_doc("fed", "import time; time.sleep(2)", {
        "alpha": "import sys; sys.exit(3)", "beta": "import time; time.sleep(120)",
        "gamma": "import time; time.sleep(5); print('done')"}))
    job = h.until("fed", state_is(JobState.SUCCEEDED), timeout=90)
    assert "the server finished; 1 of 3 parties to the end" in job.message
    lost = [e for e in h.store.list_events(job.id) if e.reason == "PartyLost"]
    assert len(lost) == 1 and "party-alpha" in lost[0].message and "exit" in lost[0].message
    assert all(s.phase.value != "Running" for s in h.backend.poll(job.id, []))  # beta was stopped
    h.store.create_job(_federated_doc("fed-bad", "import sys; sys.exit(4)", {
        "alpha": "import time; time.sleep(120)", "beta": "import time; time.sleep(120)"}))
    job = h.until("fed-bad", state_is(JobState.FAILED), timeout=90)
    assert "federation server" in job.message and "4" in job.message


def test_cancel_stops_the_processes(h: Harness):
    h.store.create_job(training_doc("sleepy", replicas=2, command=[PY, "-c", "import time; time.sleep(120)"]))
    job = h.until("sleepy", state_is(JobState.RUNNING))
    h.store.update_job_fields(job.id, cancel_requested=True)
    job = h.until("sleepy", state_is(JobState.CANCELLED))
    statuses = h.backend.poll(job.id, [])
    assert all(s.phase.value != "Running" for s in statuses)


def test_job_moves_off_a_lost_node(h: Harness):
    marker = h.state_dir.parent / "first-run"
    code = (f"import os, pathlib, time; p = pathlib.Path({str(marker)!r});\n"
            "if not p.exists(): p.write_text('x'); time.sleep(120)\n"
            "print('ran on', os.environ['MODELPLANE_NODE'])")
    h.store.create_job(training_doc("mover", replicas=1, command=[PY, "-c", code],
                                    restartPolicy={"maxRestarts": 2}))
    job = h.until("mover", lambda j: j.state is JobState.RUNNING and marker.exists())
    first = job.placement.assignments[0].node
    h.store.set_node_state(first, NodeState.NOT_READY)
    job = h.until("mover", state_is(JobState.SUCCEEDED))
    assert job.placement.assignments[0].node != first
    reasons = [e.reason for e in h.store.list_events(job.id)]
    assert "NodeLost" in reasons and "Requeued" in reasons


def test_restarted_control_plane_re_adopts_running_tasks(h: Harness):
    h.store.create_job(training_doc("long", replicas=2, command=[PY, "-c", "import time; time.sleep(3); print('done')"]))
    h.until("long", state_is(JobState.RUNNING))
    h.restart()
    job = h.until("long", state_is(JobState.SUCCEEDED))
    assert [e.to_state for e in h.store.list_events(job.id)].count("Running") == 1  # not relaunched


def test_gang_that_does_not_fit_stays_pending_with_a_reason(h: Harness):
    h.store.create_job(training_doc("big", replicas=4, accelerators=8))
    h.loop.run_once()
    job = h.store.get_job("big")
    assert job.state is JobState.PENDING and job.placement is None
    assert job.pending_reason and job.pending_reason != "waiting for the scheduler"


def test_silent_node_becomes_not_ready(store: Store):
    store.upsert_node(gpu_node("quiet"))
    now = time.time() + 3600
    NodeHealthController(store, lambda: now, timeout_seconds=60).reconcile()
    assert store.get_node("quiet").state is NodeState.NOT_READY
    store.heartbeat_node("quiet")
    assert store.get_node("quiet").state is NodeState.READY


def runtime_loop(store: Store, tmp_path: Path, **kw: Any) -> tuple[Path, dict[str, float], LocalBackend,
                                                                    ReconcileLoop]:
    """A one-node pool whose job controller has runtime files and a clock the test moves."""
    store.upsert_node(gpu_node("n1"))
    store.upsert_queue(queue())
    runtime = tmp_path / "runtime"
    clock = {"now": time.time()}
    backend = LocalBackend(tmp_path / "backend")
    loop = ReconcileLoop([
        SchedulerController(store, make_scheduler("default"), time.time),
        JobController(store, backend, lambda: clock["now"], stop_grace_seconds=1, runtime_dir=runtime,
                      heartbeat_timeout=30, **kw),
    ])
    return runtime, clock, backend, loop


def run_until_beating(loop: ReconcileLoop, store: Store, name: str, runtime: Path) -> JobRecord:
    deadline = time.time() + 60
    while time.time() < deadline:
        loop.run_once()
        job = store.get_job(name)
        if job.state is JobState.RUNNING and (runtime / job.id / "heartbeat-0.json").exists():
            return job
        time.sleep(0.1)
    raise AssertionError(f"{name} never started beating: {store.get_job(name).state}")


def test_training_runtime_files_and_silent_heartbeats(store: Store, tmp_path: Path):
    """Tasks get a checkpoint URL, a heartbeat file and a preemption-notice file; a rank whose
    heartbeat stops while its process lives is recovered."""
    runtime, clock, backend, loop = runtime_loop(store, tmp_path, checkpoint_root=str(tmp_path / "ckpt"),
                                                 peer_memory_urls="redis://127.0.0.1:6390,redis://127.0.0.1:6391")
    code = ("import json, os, time; p = os.environ['MODELPLANE_HEARTBEAT_FILE'].format(rank=os.environ['RANK']);\n"
            "print(os.environ['MODELPLANE_CHECKPOINT_URL'], os.environ['MODELPLANE_PREEMPT_FILE'],"
            " os.environ['MODELPLANE_PEER_MEMORY_URLS'], flush=True);\n"
            "json.dump({'rank': 0, 'step': 1, 'time': time.time(), 'seq': 1}, open(p, 'w')); time.sleep(120)")
    store.create_job(training_doc("beat", replicas=1, command=[PY, "-c", code], restartPolicy={"maxRestarts": 1}))
    job = run_until_beating(loop, store, "beat", runtime)
    log = backend.read_logs(job.id, 0, 0)[0]
    assert f"{tmp_path / 'ckpt'}/beat" in log and str(runtime / job.id / "preempt") in log
    assert "redis://127.0.0.1:6390,redis://127.0.0.1:6391" in log
    clock["now"] += 120  # the rank stays alive but its heartbeat is now two minutes old
    loop.run_once()
    job = store.get_job("beat")
    assert job.state is JobState.RECOVERING and job.reason == "HeartbeatLost"
    store.update_job_fields(job.id, cancel_requested=True)
    loop.run_once()


def test_a_rank_that_said_it_is_exiting_gets_a_grace_period(store: Store, tmp_path: Path):
    """After its last ("exiting") beat a rank may take a while to leave (process-group teardown,
    interpreter exit on a loaded machine): silent beyond the timeout is fine then, but not forever."""
    from modelplane.control.jobs import EXIT_GRACE_S

    runtime, clock, _backend, loop = runtime_loop(store, tmp_path)
    code = ("import json, os, time; p = os.environ['MODELPLANE_HEARTBEAT_FILE'].format(rank=0);\n"
            "json.dump({'rank': 0, 'step': 9, 'time': time.time(), 'seq': 3, 'exiting': True}, open(p, 'w'));"
            " time.sleep(120)")
    store.create_job(training_doc("leaving", replicas=1, command=[PY, "-c", code], restartPolicy={"maxRestarts": 1}))
    run_until_beating(loop, store, "leaving", runtime)
    clock["now"] += 30 + EXIT_GRACE_S / 2  # past the heartbeat timeout (30 s), inside the exit grace
    loop.run_once()
    assert store.get_job("leaving").state is JobState.RUNNING
    clock["now"] += EXIT_GRACE_S  # lingering far beyond its goodbye: lost
    loop.run_once()
    job = store.get_job("leaving")
    assert job.state is JobState.RECOVERING and job.reason == "HeartbeatLost", (job.state, job.reason)
    store.update_job_fields(job.id, cancel_requested=True)
    loop.run_once()


def test_a_rank_that_beats_but_makes_no_progress_is_hung(store: Store, tmp_path: Path):
    runtime, clock, _backend, loop = runtime_loop(store, tmp_path, hang_timeout=300)
    # Keeps beating (time moves with the controller's clock) while the step stays at 5.
    code = ("import json, os, sys, time; p = os.environ['MODELPLANE_HEARTBEAT_FILE'].format(rank=0); t0 = time.time()\n"
            "while True:\n"
            "    json.dump({'rank': 0, 'step': 5, 'step_time': t0, 'time': float(sys.argv[1]) + time.time() - t0,"
            " 'seq': 1}, open(p + '.tmp', 'w')); os.replace(p + '.tmp', p); time.sleep(0.2)")
    store.create_job(training_doc("stuck", replicas=1, command=[PY, "-c", code, str(clock["now"] + 400)],
                                  restartPolicy={"maxRestarts": 1}))
    job = run_until_beating(loop, store, "stuck", runtime)
    loop.run_once()
    assert store.get_job("stuck").state is JobState.RUNNING  # beats are fresh and progress is recent
    clock["now"] += 400  # now the heartbeat is fresh but the step is 400 s old
    loop.run_once()
    job = store.get_job("stuck")
    assert job.state is JobState.RECOVERING and job.reason == "Hung", (job.state, job.reason, job.message)
    store.update_job_fields(job.id, cancel_requested=True)
    loop.run_once()


def test_parallelism_degrees_reach_the_ranks(h: Harness):
    code = "import os; print('dp', os.environ['MODELPLANE_PARALLEL_DATA'], 'tp', os.environ['MODELPLANE_PARALLEL_TENSOR'], 'mbs', os.environ['MODELPLANE_MICRO_BATCH_SIZE'])"
    h.store.create_job(training_doc("par", replicas=2, command=[PY, "-c", code],
                                    parallelism={"data": 1, "tensor": 2, "microBatchSize": 3}))
    job = h.until("par", state_is(JobState.SUCCEEDED))
    assert "dp 1 tp 2 mbs 3" in h.backend.read_logs(job.id, 1, 0)[0]


def test_restarts_back_off_exponentially(store: Store, tmp_path: Path):
    store.upsert_node(gpu_node("n1"))
    store.upsert_queue(queue())
    clock = {"now": time.time()}
    store.clock = lambda: clock["now"]  # one clock for the store's timestamps and the controller
    loop = ReconcileLoop([
        SchedulerController(store, make_scheduler("default"), store.clock),
        JobController(store, LocalBackend(tmp_path / "backend"), store.clock, stop_grace_seconds=1,
                      restart_backoff=10),
    ])
    store.create_job(training_doc("flaky", replicas=1, command=[PY, "-c", "import sys; sys.exit(1)"],
                                  restartPolicy={"maxRestarts": 3}))

    def drive_until(state: JobState) -> JobRecord:
        deadline = time.time() + 30
        while time.time() < deadline:
            loop.run_once()
            job = store.get_job("flaky")
            if job.state is state:
                return job
            time.sleep(0.05)
        raise AssertionError(f"flaky never reached {state}: {store.get_job('flaky').state}")

    job = drive_until(JobState.RECOVERING)
    assert job.restarts == 1
    for _ in range(3):
        loop.run_once()
    assert store.get_job("flaky").state is JobState.RECOVERING  # waits 10 s before the first restart
    clock["now"] += 11
    job = drive_until(JobState.RECOVERING)
    assert job.restarts == 2
    clock["now"] += 11
    loop.run_once()
    assert store.get_job("flaky").state is JobState.RECOVERING  # the second restart waits 20 s
    clock["now"] += 10
    job = drive_until(JobState.RECOVERING)
    assert job.restarts == 3


def test_draining_node_moves_its_jobs_without_spending_restarts(h: Harness):
    """A drain (e.g. a spot interruption notice) checkpoints-then-moves: notice file, stop, re-place."""
    marker = h.state_dir.parent / "drain-first-run"
    code = (f"import os, pathlib, time; p = pathlib.Path({str(marker)!r});\n"
            "if not p.exists(): p.write_text('x'); time.sleep(120)\n"
            "print('ran on', os.environ['MODELPLANE_NODE'])")
    h.store.create_job(training_doc("drained", replicas=1, command=[PY, "-c", code]))
    job = h.until("drained", lambda j: j.state is JobState.RUNNING and marker.exists())
    first = job.placement.assignments[0].node
    h.store.set_node_state(first, NodeState.DRAINING)
    job = h.until("drained", state_is(JobState.SUCCEEDED))
    assert job.placement.assignments[0].node != first and job.restarts == 0
    assert "NodeDraining" in [e.reason for e in h.store.list_events(job.id)]
