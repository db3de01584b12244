"""Stopping a job kills every process of each task's group: SIGTERM, a grace period, SIGKILL."""

from __future__ import annotations

from modelplane.backends.base import TaskPhase


def spawn_child_and_wait(local, pid_file, trap_term: bool = False) -> list[str]:
    """A task that starts a child process (as a data loader would), writes both pids, then waits."""
    trap = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if trap_term else ""
    code = (
        "import os, signal, subprocess, sys, time\n"
        + trap
        + "child = subprocess.Popen(['sleep', '300'])\n"
        + f"tmp = {str(pid_file)!r} + '.tmp'\n"
        + "open(tmp, 'w').write(f'{os.getpid()} {child.pid}')\n"
        + f"os.replace(tmp, {str(pid_file)!r})\n"
        + "time.sleep(300)\n"
    )
    return local.python_task(code)


def read_pids(local, pid_file) -> tuple[int, int]:
    local.wait_for(pid_file.exists, "the task to start its child")
    task_pid, child_pid = (int(p) for p in pid_file.read_text().split())
    return task_pid, child_pid


def test_stop_kills_the_task_and_its_children(local):
    pid_file = local.work / "pids"
    statuses = local.launch(local.task("stop-me", spawn_child_and_wait(local, pid_file)))
    task_pid, child_pid = read_pids(local, pid_file)
    assert not local.process_gone(child_pid)

    local.backend.stop("stop-me", grace_seconds=10)

    assert local.process_gone(task_pid)
    local.wait_for(lambda: local.process_gone(child_pid), "the task's child to die")
    [status] = local.backend.poll("stop-me", statuses)
    assert status.phase is TaskPhase.FAILED
    assert status.message.startswith("stopped on request")
    assert "SIGTERM" in status.message and status.exit_code == 143


def test_a_task_ignoring_sigterm_is_killed_after_the_grace(local):
    pid_file = local.work / "pids"
    statuses = local.launch(local.task("stubborn", spawn_child_and_wait(local, pid_file, trap_term=True)))
    task_pid, child_pid = read_pids(local, pid_file)

    local.backend.stop("stubborn", grace_seconds=0.3)

    local.wait_for(lambda: local.process_gone(task_pid) and local.process_gone(child_pid),
                   "the task and its child to die")
    [status] = local.wait_done("stubborn", statuses)
    assert status.phase is TaskPhase.FAILED
    assert "stopped on request" in status.message and "SIGKILL" in status.message
    assert status.exit_code == 137


def test_stop_is_idempotent_and_works_from_a_fresh_instance(local):
    pid_file = local.work / "pids"
    statuses = local.launch(local.task("twice", spawn_child_and_wait(local, pid_file)))
    task_pid, child_pid = read_pids(local, pid_file)

    restarted = local.fresh_backend()
    restarted.stop("twice", grace_seconds=10)
    restarted.stop("twice", grace_seconds=10)
    local.backend.stop("twice", grace_seconds=10)
    restarted.stop("never-launched", grace_seconds=1)

    local.wait_for(lambda: local.process_gone(task_pid) and local.process_gone(child_pid),
                   "the task and its child to die")
    [status] = restarted.poll("twice", statuses)
    assert status.phase is TaskPhase.FAILED and "stopped on request" in status.message


def test_stop_leaves_a_finished_task_as_it_ended(local):
    statuses = local.wait_done("done", local.launch(local.task("done", ["true"])))
    local.backend.stop("done", grace_seconds=1)
    assert local.backend.poll("done", []) == statuses
    assert statuses[0].phase is TaskPhase.SUCCEEDED


def test_leftover_children_die_when_the_main_command_ends(local):
    """Like a container: a task is over when its main command is, background children included."""
    pid_file = local.work / "child"
    code = (
        "import subprocess\n"
        f"child = subprocess.Popen(['sleep', '300'])\nopen({str(pid_file)!r}, 'w').write(str(child.pid))\n"
    )
    [status] = local.wait_done("bg", local.launch(local.task("bg", local.python_task(code))))
    assert status.phase is TaskPhase.SUCCEEDED
    child_pid = int(pid_file.read_text())
    local.wait_for(lambda: local.process_gone(child_pid), "the background child to be killed")
