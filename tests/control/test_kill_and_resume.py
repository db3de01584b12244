"""Training that survives failure, end to end through the control plane with real processes.

A 2-rank DDP job (gloo, CPU) from ``examples/resumable-job.yaml`` runs ``examples/train_resumable.py``
through the scheduler, the job controller and the local backend. In the middle of the run one rank
is SIGKILLed; or frozen with SIGSTOP so that its heartbeats stop while the process lives (and the
newest checkpoint is damaged meanwhile); or its node goes NotReady; or the job is preempted. Each
time the job must be detected, placed again, relaunched with a fresh rendezvous, resume from the
last complete checkpoint and end Succeeded with the parameters and loss curve of a run that never
stopped (same seed, same data order).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from modelplane.backends.local import LocalBackend, ProcessId
from modelplane.control.base import ReconcileLoop
from modelplane.control.jobs import JobController
from modelplane.control.scheduling import SchedulerController
from modelplane.core.errors import ModelplaneError
from modelplane.core.job import JobState
from modelplane.core.node import NodeState
from modelplane.platform import make_scheduler
from modelplane.store import JobRecord, Store
from tests.helpers import gpu_node, queue

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "train_resumable.py"
MANIFEST = REPO / "examples" / "resumable-job.yaml"
STEPS = 32
SAVE_EVERY = 4
STEP_DELAY = 0.1
HEARTBEAT_TIMEOUT = 3.0


def _load_example() -> Any:
    """The example script doubles as the reference implementation (its uninterrupted run)."""
    spec = importlib.util.spec_from_file_location("train_resumable", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Plane:
    """Scheduler + job controller over a real store and the local backend, stepped by the test."""

    def __init__(self, tmp: Path) -> None:
        self.store = Store(f"sqlite:///{tmp / 'modelplane.db'}")
        self.store.upsert_node(gpu_node("n1", switch="s0"))
        self.store.upsert_node(gpu_node("n2", switch="s1"))
        self.store.upsert_queue(queue())
        self.backend = LocalBackend(tmp / "backend")
        self.runtime = tmp / "runtime"
        self.loop = ReconcileLoop([
            SchedulerController(self.store, make_scheduler("default"), time.time),
            JobController(self.store, self.backend, time.time, stop_grace_seconds=1, runtime_dir=self.runtime,
                          checkpoint_root=str(tmp / "ckpt"), heartbeat_timeout=HEARTBEAT_TIMEOUT),
        ])
        self.out = tmp / "result.pt"
        self.root = tmp

    def submit(self, name: str) -> None:
        """The example manifest, with a shorter run, faster heartbeats and a result file."""
        doc = yaml.safe_load(MANIFEST.read_text())
        doc["metadata"] = {"name": name}
        template = doc["spec"]["template"]
        template["command"] = [sys.executable, str(SCRIPT), "--steps", str(STEPS), "--save-every", str(SAVE_EVERY),
                               "--step-delay", str(STEP_DELAY), "--out", str(self.out)]
        template["env"] |= {"PYTHONPATH": str(REPO / "src"), "MODELPLANE_HEARTBEAT_INTERVAL_S": "0.5"}
        assert doc["spec"]["restartPolicy"]["maxRestarts"] >= 1
        self.store.create_job(doc)

    def until(self, name: str, pred: Callable[[JobRecord], bool], timeout: float = 90) -> JobRecord:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.loop.run_once()
            job = self.store.get_job(name)
            if pred(job):
                return job
            if job.state in (JobState.FAILED, JobState.CANCELLED):
                break
            time.sleep(0.1)
        job = self.store.get_job(name)
        logs = "\n".join(self.log(job, r)[-1500:] for r in (0, 1))
        raise AssertionError(f"job {name} ended up {job.state.value}: {job.reason} {job.message} "
                             f"{job.pending_reason}\n{self.events(job)}\n{logs}")

    def beat(self, job: JobRecord, rank: int) -> dict[str, Any]:
        try:
            return dict(json.loads((self.runtime / job.id / f"heartbeat-{rank}.json").read_text()))
        except (OSError, ValueError):
            return {}

    def log(self, job: JobRecord, rank: int) -> str:
        try:
            return self.backend.read_logs(job.id, rank, 0)[0]
        except ModelplaneError as exc:  # only used to explain a failure
            return f"<no log: {exc}>"

    def events(self, job: JobRecord) -> list[tuple[str | None, str, str]]:
        return [(e.to_state, e.reason, e.message) for e in self.store.list_events(job.id)]

    def training_pid(self, job: JobRecord, rank: int) -> int:
        """The training process of ``rank``: the child of the wrapper named by the task's handle."""
        row = next(t for t in self.store.list_tasks(job.id) if t.rank == rank)
        ident = ProcessId.parse(row.handle)
        assert ident is not None, f"task {rank} has no local handle: {row.handle!r}"
        children = Path(f"/proc/{ident.pid}/task/{ident.pid}/children").read_text().split()
        assert len(children) == 1, f"wrapper {ident.pid} has children {children}"
        return int(children[0])

    def mid_run(self, name: str) -> JobRecord:
        """Wait until both ranks are past the second checkpoint and well before the end."""
        target = 2 * SAVE_EVERY + 2
        return self.until(name, lambda j: j.state is JobState.RUNNING
                          and all(self.beat(j, r).get("step", 0) >= target for r in (0, 1)))


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], list[float]]:
    params, losses = _load_example().reference_run(STEPS)
    return params, losses


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    p = Plane(tmp_path)
    yield p
    for job in p.store.list_jobs(limit=100)[0]:
        p.backend.stop(job.id, 0)
    p.store.close()


def _assert_resumed_and_equal(plane: Plane, job: JobRecord, failed_at: int,
                              reference: tuple[dict[str, torch.Tensor], list[float]],
                              graceful: bool = False) -> dict[str, Any]:
    """``graceful``: the old attempt was stopped with SIGTERM, so it may have saved at the step
    boundary where it stopped (after ``failed_at``) instead of only every SAVE_EVERY steps."""
    params, losses = reference
    result: dict[str, Any] = torch.load(plane.out)
    assert result["step"] == STEPS and not result["preempted"]
    resumed = result["resumed_from"]
    assert resumed is not None and 0 < resumed < STEPS, resumed
    if not graceful:
        assert resumed <= failed_at and resumed % SAVE_EVERY == 0, (resumed, failed_at)
    log0 = plane.log(job, 0)
    assert f"rank 0 resumed from step {resumed}" in log0
    # The loss curve of the relaunched attempt continues where the checkpoint left off ...
    printed = {int(s): float(v) for s, v in re.findall(r"rank 0 step (\d+) loss ([-\d.e]+)", log0)}
    assert sorted(printed) == list(range(resumed + 1, STEPS + 1))
    for step, loss in printed.items():
        assert loss == pytest.approx(losses[step - 1], rel=1e-4, abs=1e-5), step
    # ... and ends where the uninterrupted run ends.
    for key, value in params.items():
        torch.testing.assert_close(result["params"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    return result


def test_sigkilled_rank_is_relaunched_and_resumes(plane: Plane, reference: Any) -> None:
    plane.submit("killed")
    job = plane.mid_run("killed")
    pid = plane.training_pid(job, 1)
    assert plane.beat(job, 1)["pid"] == pid  # the heartbeat comes from the process we kill
    os.kill(pid, signal.SIGKILL)
    failed_at = plane.beat(job, 1)["step"]  # its last beat: it saves nothing after a step it did not beat
    job = plane.until("killed", lambda j: j.state is JobState.SUCCEEDED)
    assert job.restarts == 1
    events = plane.events(job)
    states = [s for s, _, _ in events]
    assert states == ["Pending", "Admitted", "Running", "Recovering", "Pending", "Admitted", "Running",
                      "Succeeded"], events
    # Detected from the process exit: rank 1's SIGKILL, or rank 0's error if gloo noticed the lost
    # peer and rank 0 exited before the controller's next look.
    recovering = events[states.index("Recovering")]
    assert re.search(r"rank 1 failed: killed by SIGKILL|rank 0 failed", recovering[2]), recovering
    _assert_resumed_and_equal(plane, job, failed_at, reference)


def test_rank_with_silent_heartbeat_is_detected_and_resumes_past_a_corrupt_checkpoint(
        plane: Plane, reference: Any) -> None:
    plane.submit("frozen")
    job = plane.mid_run("frozen")
    pid = plane.training_pid(job, 1)
    os.kill(pid, signal.SIGSTOP)  # alive to the backend, but silent: only heartbeats can tell
    time.sleep(1)  # a commit already past rank 1's part may still land; detection takes 3 s anyway
    failed_at = plane.beat(job, 1)["step"]
    # With rank 1 frozen no further checkpoint can commit; damage the newest one, as a crash in
    # the middle of a copy to storage would: resume must fall back to the one before it.
    complete = sorted(p.parent for p in (plane.root / "ckpt" / "frozen").glob("step-*/MANIFEST.json"))
    assert len(complete) >= 2, complete
    shard = next(complete[-1].glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    job = plane.until("frozen", lambda j: j.state is JobState.SUCCEEDED)
    events = plane.events(job)
    lost = [e for e in events if e[1] == "HeartbeatLost"]
    assert len(lost) == 1 and "rank(s) 1" in lost[0][2], events
    assert job.restarts == 1
    result = _assert_resumed_and_equal(plane, job, failed_at, reference)
    assert result["resumed_from"] == int(complete[-2].name.removeprefix("step-")), (complete, result["resumed_from"])


def test_job_migrates_off_a_node_that_went_not_ready(plane: Plane, reference: Any) -> None:
    plane.submit("mover")
    job = plane.mid_run("mover")
    assert job.placement is not None
    first = {a.node for a in job.placement.assignments}
    assert len(first) == 1  # a 2-rank gang fits on one node
    failed_at = max(plane.beat(job, r)["step"] for r in (0, 1))
    (bad,) = first
    plane.store.set_node_state(bad, NodeState.NOT_READY)
    job = plane.until("mover", lambda j: j.state is JobState.SUCCEEDED)
    assert job.placement is not None and bad not in {a.node for a in job.placement.assignments}
    assert "NodeLost" in [r for _, r, _ in plane.events(job)]
    _assert_resumed_and_equal(plane, job, failed_at, reference, graceful=True)


def test_preempted_job_is_requeued_and_finishes_the_run(plane: Plane, reference: Any) -> None:
    """Preemption (as the scheduler decides it for a higher-priority job) writes the notice file and
    stops the gang; the requeued attempt must train to the end, not take the old notice for a new
    one and stop again at once."""
    plane.submit("bumped")
    job = plane.mid_run("bumped")
    failed_at = max(plane.beat(job, r)["step"] for r in (0, 1))
    plane.store.transition_job(job.id, JobState.PREEMPTED, "Preempted", "a higher-priority job needs the devices")
    job = plane.until("bumped", lambda j: j.state is JobState.SUCCEEDED)
    states = [s for s, _, _ in plane.events(job)]
    assert states.count("Preempted") == 1 and states.count("Running") == 2, plane.events(job)
    _assert_resumed_and_equal(plane, job, failed_at, reference, graceful=True)
