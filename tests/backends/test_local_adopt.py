"""After a control-plane restart, a new backend instance re-adopts running tasks or reports them lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import modelplane
from modelplane.backends.base import TaskPhase, TaskStatus
from modelplane.backends.local import ProcessId

# Runs in its own interpreter: launch one task, print its status, then die as `kill -9` would.
LAUNCH_AND_DIE = """
import json, os, signal, sys
from modelplane.backends.base import TaskLaunch
from modelplane.backends.local import LocalBackend
state_dir, command = sys.argv[1], json.loads(sys.argv[2])
backend = LocalBackend(state_dir)
[status] = backend.launch([TaskLaunch("orphan", "orphan", "main", 0, 0, 1, "node-0", command)])
print(json.dumps({"phase": str(status.phase), "handle": status.handle}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_fresh_instance_adopts_a_running_task_and_reports_its_exit(local):
    go = local.go_file()
    code = local.wait_until_file(go) + "print('bye')\nraise SystemExit(5)\n"
    stored = local.launch(local.task("adopt", local.python_task(code)))

    restarted = local.fresh_backend()
    [status] = restarted.poll("adopt", stored)
    assert status.phase is TaskPhase.RUNNING
    assert status.handle == stored[0].handle

    go.touch()
    [status] = local.wait_done("adopt", [status], backend=restarted)
    assert (status.phase, status.exit_code) == (TaskPhase.FAILED, 5)
    assert restarted.read_logs("adopt", 0, 0)[0] == "bye\n"


def test_a_task_outlives_the_control_plane_that_launched_it(local):
    go = local.go_file()
    command = local.python_task(local.wait_until_file(go) + "print('still here')\n")
    env = {**os.environ, "PYTHONPATH": str(Path(modelplane.__file__).parents[1])}
    launcher = subprocess.run(
        [sys.executable, "-c", LAUNCH_AND_DIE, str(local.state_dir), json.dumps(command)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert launcher.returncode == -signal.SIGKILL, launcher.stderr
    launched = json.loads(launcher.stdout)
    stored = [TaskStatus("orphan", 0, TaskPhase(launched["phase"]), handle=launched["handle"])]

    restarted = local.fresh_backend()
    try:
        [status] = restarted.poll("orphan", stored)
        assert status.phase is TaskPhase.RUNNING, status
        go.touch()
        [status] = local.wait_done("orphan", [status], backend=restarted)
    finally:
        restarted.stop("orphan", grace_seconds=0)
    assert (status.phase, status.exit_code) == (TaskPhase.SUCCEEDED, 0)
    assert restarted.read_logs("orphan", 0, 0)[0] == "still here\n"


def test_a_task_killed_with_its_wrapper_is_lost(local):
    stored = local.launch(local.task("vanish", local.python_task("import time; time.sleep(300)")))
    wrapper = local.wrapper_pid(stored[0])
    os.killpg(wrapper, signal.SIGKILL)  # wrapper and task die without recording an exit code

    restarted = local.fresh_backend()
    [status] = local.wait_done("vanish", stored, backend=restarted)
    assert status.phase is TaskPhase.LOST
    assert "vanished without recording an exit code" in status.message


def test_a_task_whose_wrapper_alone_died_is_lost_and_killed(local):
    pid_file = local.work / "pid"
    code = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)\n"
    stored = local.launch(local.task("half", local.python_task(code)))
    local.wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", "the task to start")
    task_pid = int(pid_file.read_text())
    os.kill(local.wrapper_pid(stored[0]), signal.SIGKILL)

    restarted = local.fresh_backend()
    [status] = local.wait_done("half", stored, backend=restarted)
    assert status.phase is TaskPhase.LOST
    local.wait_for(lambda: local.process_gone(task_pid), "the untracked task process to be killed")


def test_a_reused_pid_is_not_mistaken_for_the_task(local):
    """The handle names this very test process but with another start time: that is not our task."""
    me = ProcessId(os.getpid(), 1)
    stored = [TaskStatus("reused", 0, TaskPhase.RUNNING, handle=me.handle())]
    [status] = local.fresh_backend().poll("reused", stored)
    assert status.phase is TaskPhase.LOST
    assert not local.process_gone(os.getpid())


def test_the_task_record_stands_in_for_a_missing_handle(local):
    go = local.go_file()
    local.launch(local.task("nohandle", local.python_task(local.wait_until_file(go))))
    restarted = local.fresh_backend()
    stored = [TaskStatus("nohandle", 0, TaskPhase.STARTING)]
    [status] = restarted.poll("nohandle", stored)
    assert status.phase is TaskPhase.RUNNING and status.handle.startswith("local:")
    assert [s.rank for s in restarted.poll("nohandle", [])] == [0]
    go.touch()
    [status] = local.wait_done("nohandle", [status], backend=restarted)
    assert status.phase is TaskPhase.SUCCEEDED


def test_relaunching_a_running_task_adopts_it_instead_of_starting_a_twin(local):
    counter = local.work / "starts"
    go = local.go_file()
    code = f"open({str(counter)!r}, 'a').write('x')\n" + local.wait_until_file(go)
    task = local.task("twin", local.python_task(code))
    [first] = local.launch(task)
    [again] = local.fresh_backend().launch([task])
    assert again.phase is TaskPhase.RUNNING and again.handle == first.handle
    go.touch()
    local.wait_done("twin", [first])
    assert counter.read_text() == "x"
    # once it has ended, launching again is a real restart (a retry)
    [retry] = local.launch(task)
    assert retry.handle != first.handle
    [status] = local.wait_done("twin", [retry])
    assert status.phase is TaskPhase.SUCCEEDED and counter.read_text() == "xx"


def test_unknown_handles_are_lost_not_errors(local):
    stored = [TaskStatus("ghost", 0, TaskPhase.RUNNING, handle="k8s:pod/ghost"),
              TaskStatus("ghost", 1, TaskPhase.RUNNING, handle="local:notanumber:1")]
    statuses = local.fresh_backend().poll("ghost", stored)
    assert [s.phase for s in statuses] == [TaskPhase.LOST, TaskPhase.LOST]
