"""The wrapper process that stands between the local backend and one task's command.

Why it exists: a control plane that restarts (even after ``kill -9``) is no longer the parent of
the tasks it launched, so it cannot ``wait()`` for their exit codes. This wrapper is: it starts the
user command, waits for it, and writes the exit code to a file atomically (tmp + ``os.replace``),
where any later backend instance can read it.

Lifetime: the backend starts the wrapper in a new session (so it leads its own process group and
has no controlling terminal), with stdin on /dev/null and stdout/stderr on the task's log file.
Nothing ties it to the control plane: when the control plane dies, the wrapper and the task keep
running, and a restarted control plane re-adopts them from the handle and the task record.

Signals: the wrapper catches SIGTERM, SIGINT and SIGHUP and does nothing with them (a handler, not
``SIG_IGN``, so the user command does not inherit an ignored disposition). ``stop`` signals the
whole process group, so the user command gets the signal directly while the wrapper survives to
record how it ended. Like a container, a task ends when its main command ends: once the exit
code is recorded the wrapper SIGKILLs whatever the command left behind in its process group.

This file imports only the standard library and is run by path with ``python -I``, so a task's
own PYTHONPATH or virtual environment cannot break it.

Usage: ``python -I local_runner.py EXIT_FILE -- COMMAND [ARG...]``
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time


def write_atomically(path: str, payload: dict[str, object]) -> None:
    """Write JSON so that a reader sees either nothing or the whole record, even across a crash."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:
        dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def group_members(pgid: int) -> list[int]:
    """Pids of the processes in process group ``pgid`` (read from /proc)."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields[0] is field 3 (state); field 5 (pgrp) is fields[2].
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def kill_leftovers() -> None:
    """SIGKILL every other process of our group: the command's background children."""
    me = os.getpid()
    pgid = os.getpgrp()
    for _ in range(20):  # a leftover may fork while we look; a few rounds catch the stragglers
        others = [pid for pid in group_members(pgid) if pid != me]
        if not others:
            return
        for pid in others:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _ignore(signum: int, frame: object) -> None:
    """Survive the group-wide signals of ``stop``; the command receives them itself."""


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: local_runner.py EXIT_FILE -- COMMAND [ARG...]\n")
        return 2
    exit_file, command = argv[0], argv[2:]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _ignore)
    try:
        proc = subprocess.Popen(command)
    except OSError as exc:
        code = 127 if exc.errno == errno.ENOENT else 126
        message = f"cannot start {command[0]!r}: {exc.strerror or exc}"
        sys.stderr.write(f"modelplane: {message}\n")
        sys.stderr.flush()
        write_atomically(exit_file, {"returncode": code, "error": message})
        return 0
    returncode = proc.wait()
    write_atomically(exit_file, {"returncode": returncode, "error": None, "pid": proc.pid})
    kill_leftovers()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
