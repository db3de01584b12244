"""How a task's end maps to a TaskPhase, and how tasks that cannot start are reported."""

from __future__ import annotations

import pytest

from modelplane.backends.base import BackendError, TaskPhase, create_backend
from modelplane.backends.local import LocalBackend


@pytest.mark.parametrize(
    ("code", "phase", "exit_code", "words"),
    [
        ("pass", TaskPhase.SUCCEEDED, 0, "exited with code 0"),
        ("raise SystemExit(3)", TaskPhase.FAILED, 3, "exited with code 3"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", TaskPhase.FAILED, 137, "SIGKILL"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", TaskPhase.FAILED, 139, "SIGSEGV"),
    ],
)
def test_exit_codes_and_signals(local, code, phase, exit_code, words):
    [status] = local.wait_done("exit", local.launch(local.task("exit", local.python_task(code))))
    assert status.phase is phase
    assert status.exit_code == exit_code
    assert words in status.message


def test_each_rank_reports_its_own_end(local):
    tasks = [local.task("mixed", local.python_task(f"raise SystemExit({r})"), rank=r, world_size=3)
             for r in range(3)]
    statuses = local.wait_done("mixed", local.launch(*tasks))
    assert [(s.rank, s.phase, s.exit_code) for s in statuses] == [
        (0, TaskPhase.SUCCEEDED, 0), (1, TaskPhase.FAILED, 1), (2, TaskPhase.FAILED, 2)]


def test_tasks_that_cannot_start_fail_with_a_reason(local, tmp_path):
    not_executable = tmp_path / "script.sh"
    not_executable.write_text("echo hi\n")
    tasks = [
        local.task("bad-cmd", ["definitely-not-a-command-xyz", "--flag"]),
        local.task("bad-dir", ["true"], working_dir=str(tmp_path / "missing")),
        local.task("empty", []),
        local.task("noexec", [str(not_executable)]),
    ]
    statuses = {s.job_id: s for s in local.launch(*tasks)}
    assert all(s.phase is TaskPhase.FAILED for s in statuses.values()), statuses
    assert "'definitely-not-a-command-xyz' not found on PATH" in statuses["bad-cmd"].message
    assert "does not exist" in statuses["bad-dir"].message and "workingDir" in statuses["bad-dir"].message
    assert "empty command" in statuses["empty"].message
    assert "not executable" in statuses["noexec"].message
    # the reason is in the task's log too, where a user running `logs` will look
    assert "not found on PATH" in local.log("bad-cmd")
    # a failure before start is final: polling keeps it
    assert local.backend.poll("bad-cmd", [statuses["bad-cmd"]]) == [statuses["bad-cmd"]]


def test_exec_failure_inside_the_wrapper_is_recorded(local, tmp_path):
    """An executable file the kernel cannot run passes the checks but fails at exec."""
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"\x7fELF not really")
    bogus.chmod(0o755)
    [status] = local.wait_done("exec", local.launch(local.task("exec", [str(bogus)])))
    assert status.phase is TaskPhase.FAILED
    assert status.exit_code == 126
    assert "cannot start" in status.message
    assert "cannot start" in local.log("exec")


def test_registered_by_name_and_bad_state_dir(tmp_path):
    assert isinstance(create_backend("local", state_dir=tmp_path / "s"), LocalBackend)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(BackendError, match="cannot use state directory") as err:
        LocalBackend(a_file)
    assert err.value.hint


def test_job_ids_cannot_escape_the_state_dir(local):
    [status] = local.wait_done("../escape", local.launch(local.task("../escape", ["true"])))
    assert status.phase is TaskPhase.SUCCEEDED
    assert not (local.state_dir / "escape").exists()
    assert local.backend.job_dir("../escape").parent == local.state_dir / "jobs"
