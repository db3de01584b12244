"""The local backend: each placed task is a real process on this machine.

Nodes are virtual here: a task placed on node ``a100-0`` with devices (2, 3) runs on this machine
with ``MODELPLANE_NODE=a100-0`` and ``CUDA_VISIBLE_DEVICES=2,3``. Container images are not used.

Every task runs under a small wrapper (``local_runner.py``) in its own session and process group.
The wrapper records the command's exit code in a file, so that a control plane restarted after a
crash -- no longer the parent of anything -- can still learn how its tasks ended. On disk, under
``<state_dir>/jobs/<job_id>/``:

- ``<rank>.log``   stdout and stderr of the task (what ``logs -f`` follows)
- ``<rank>.json``  the task record: wrapper pid, its start time, command, node
- ``<rank>.exit``  written by the wrapper when the command ends: ``{"returncode": ...}``
- ``<rank>.stop``  written by ``stop`` so that a killed task reads as stopped, not lost
- ``<rank>.addr``  written by a serving task once it listens (``ADDRESS_FILE_ENV``): its port

The handle returned at launch is ``local:<pid>:<start ticks>``; the start time (field 22 of
``/proc/<pid>/stat``) tells a live task from an unrelated process that later got the same pid.

Tasks outlive the control plane on purpose: the wrapper is not tied to its parent's lifetime.
A restarted control plane calls ``poll`` with the statuses it stored and gets the task back as
RUNNING, or its recorded exit, or LOST when the wrapper vanished without recording one (killed
with SIGKILL, machine rebooted); the remaining processes of a lost task are killed so that no
untracked process keeps devices busy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from modelplane.backends.base import (
    ADDRESS_FILE_ENV,
    FINISHED_PHASES,
    Backend,
    BackendError,
    TaskLaunch,
    TaskPhase,
    TaskStatus,
    register_backend,
    reported_port,
)
from modelplane.core.accelerators import families, family_of_model
from modelplane.core.errors import InvalidSpec, NotFound

RUNNER = Path(__file__).with_name("local_runner.py")
HANDLE_PREFIX = "local"

# Children this process started and has not reaped yet, shared by every backend instance of the
# process: a wrapper that exits while we are its parent stays a zombie until someone waits for it.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_CHILDREN_LOCK = threading.Lock()


def _remember_child(proc: subprocess.Popen[bytes]) -> None:
    with _CHILDREN_LOCK:
        _CHILDREN[proc.pid] = proc


def _reap_children() -> None:
    with _CHILDREN_LOCK:
        for pid, proc in list(_CHILDREN.items()):
            if proc.poll() is not None:
                del _CHILDREN[pid]


# -- process identity -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessId:
    """A pid plus its start time: together they name one process, even after pid reuse."""

    pid: int
    start_ticks: int

    def handle(self) -> str:
        return f"{HANDLE_PREFIX}:{self.pid}:{self.start_ticks}"

    @classmethod
    def parse(cls, handle: str) -> ProcessId | None:
        parts = handle.split(":")
        if len(parts) != 3 or parts[0] != HANDLE_PREFIX:
            return None
        try:
            return cls(int(parts[1]), int(parts[2]))
        except ValueError:
            return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a live pid, from /proc; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])  # fields[0] is field 3 (state), fields[19] is field 22
    except (OSError, IndexError, ValueError):
        return None


def _start_ticks(pid: int) -> int:
    stat = _proc_stat(pid)
    return stat[1] if stat else 0


def _is_running(ident: ProcessId) -> bool:
    """True while the very process ``ident`` names is alive (a zombie counts as exited)."""
    stat = _proc_stat(ident.pid)
    if stat is None:
        if not Path("/proc/self/stat").exists():  # no procfs: fall back to the pid alone
            try:
                os.kill(ident.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return False
    state, ticks = stat
    return ticks == ident.start_ticks and state not in ("Z", "X")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_orphans(ident: ProcessId) -> None:
    """SIGKILL what is left of a task whose wrapper is gone.

    A pid is not handed out again while a process group of that number still has members, so if
    ``/proc/<pgid>`` is absent (or still shows our wrapper, as a zombie), whatever is in group
    ``pgid`` is ours. If the pid now names another process, our group was empty when it got the
    number: there is nothing to kill.
    """
    stat = _proc_stat(ident.pid)
    if stat is None or stat[1] == ident.start_ticks:
        _signal_group(ident.pid, signal.SIGKILL)


# -- exit codes and logs ----------------------------------------------------------------------------


def _describe_returncode(returncode: int) -> tuple[int, str]:
    """Exit code as a shell reports it (128 + signal for a killed process) and words for it."""
    if returncode < 0:
        signum = -returncode
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return 128 + signum, f"killed by {name} (signal {signum})"
    return returncode, f"exited with code {returncode}"


def _complete_utf8_prefix(data: bytes) -> int:
    """Length of ``data`` without a multi-byte UTF-8 character cut off at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        if byte & 0x80 == 0:  # ASCII
            return len(data)
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
        return len(data) if back >= need else len(data) - back
    return len(data)


def _job_dir_name(job_id: str) -> str:
    if not job_id or job_id in (".", ".."):
        raise InvalidSpec(
            f"job id {job_id!r} cannot name a directory", hint="use a non-empty job id", field="job_id"
        )
    return quote(job_id, safe="-_.")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(tmp, path)


# -- environment ------------------------------------------------------------------------------------


def _local_layout(tasks: Sequence[TaskLaunch]) -> dict[tuple[str, int], tuple[int, int, int]]:
    """(job, rank) -> (LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK), from the tasks launched together.

    Nodes are numbered in the order of the lowest rank placed on them, as torchrun numbers them.
    """
    by_node: dict[tuple[str, str], list[int]] = defaultdict(list)
    for task in tasks:
        by_node[(task.job_id, task.node)].append(task.rank)
    node_rank: dict[tuple[str, str], int] = {}
    per_job: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for (job, node), ranks in by_node.items():
        per_job[job].append((min(ranks), node))
    for job, nodes in per_job.items():
        for i, (_, node) in enumerate(sorted(nodes)):
            node_rank[(job, node)] = i
    layout = {}
    for (job, node), ranks in by_node.items():
        for local, rank in enumerate(sorted(ranks)):
            layout[(job, rank)] = (local, len(ranks), node_rank[(job, node)])
    return layout


def task_environment(
    task: TaskLaunch, local_rank: int, local_world_size: int, node_rank: int, base: dict[str, str]
) -> dict[str, str]:
    """The environment a distributed task expects, on top of ``base`` and under the user's env.

    The control plane's own MODELPLANE_* settings (database URL, tokens) are not passed on. Every
    vendor's visibility variable is emptied first, so that a task sees only the devices it was
    placed on and a CPU-only task sees none.
    """
    env = {k: v for k, v in base.items() if not k.startswith("MODELPLANE_")}
    for fam in families():
        env.update(fam.visibility([]))
    if task.devices or task.accelerator_model:
        env.update(family_of_model(task.accelerator_model or "").visibility(list(task.devices)))
    env.update(
        {
            "RANK": str(task.rank),
            "WORLD_SIZE": str(task.world_size),
            "LOCAL_RANK": str(local_rank),
            "LOCAL_WORLD_SIZE": str(local_world_size),
            "NODE_RANK": str(node_rank),
            "GROUP_RANK": str(node_rank),
            "MASTER_ADDR": task.master_addr,
            "MASTER_PORT": str(task.master_port),
            "MODELPLANE_JOB_ID": task.job_id,
            "MODELPLANE_JOB_NAME": task.job_name,
            "MODELPLANE_POD_SET": task.pod_set,
            "MODELPLANE_TASK_INDEX": str(task.index),
            "MODELPLANE_NODE": task.node,
            "PYTHONUNBUFFERED": "1",  # so that `logs -f` shows a Python task's output as it happens
        }
    )
    if task.gpu_milli:
        env["MODELPLANE_GPU_MILLI"] = str(task.gpu_milli)
    env.update(task.env)
    return env


def _resolve_command(command: list[str], env: dict[str, str], cwd: Path) -> str | None:
    """Why ``command`` cannot start, or None when it can."""
    if not command or not command[0]:
        return "the task has an empty command"
    exe = command[0]
    if "/" in exe:
        path = cwd / exe
        if not path.is_file():
            return f"command {exe!r} not found (looked in {cwd})"
        if not os.access(path, os.X_OK):
            return f"command {exe!r} is not executable"
        return None
    if shutil.which(exe, path=env.get("PATH", os.defpath)) is None:
        return f"command {exe!r} not found on PATH"
    return None


# -- the backend ------------------------------------------------------------------------------------


@register_backend("local")
class LocalBackend(Backend):
    """Runs tasks as processes on this machine; see the module docstring for the files it keeps."""

    name = "local"

    def __init__(
        self,
        state_dir: Path | str,
        *,
        log_chunk_bytes: int = 1 << 20,
        python: str | None = None,
        tasks_choose_ports: bool = False,
    ) -> None:
        """``tasks_choose_ports``: serving tasks bind port 0 and report the port they got, as on a
        remote backend, instead of the port the control plane picked (which another process may
        take between the pick and the bind); a custom server must then write ``ADDRESS_FILE_ENV``."""
        super().__init__()
        self.tasks_choose_ports = tasks_choose_ports
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.log_chunk_bytes = log_chunk_bytes
        self.python = python or sys.executable
        self._launch_lock = threading.Lock()
        try:
            (self.state_dir / "jobs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(
                f"local backend cannot use state directory {self.state_dir}: {exc.strerror}",
                hint="point MODELPLANE_STATE_DIR at a writable directory",
            ) from exc

    # -- paths --

    def job_dir(self, job_id: str) -> Path:
        return self.state_dir / "jobs" / _job_dir_name(job_id)

    def log_path(self, job_id: str, rank: int) -> Path:
        return self.job_dir(job_id) / f"{rank}.log"

    def _record_path(self, job_id: str, rank: int) -> Path:
        return self.job_dir(job_id) / f"{rank}.json"

    def _exit_path(self, job_id: str, rank: int) -> Path:
        return self.job_dir(job_id) / f"{rank}.exit"

    def _stop_path(self, job_id: str, rank: int) -> Path:
        return self.job_dir(job_id) / f"{rank}.stop"

    def _address_path(self, job_id: str, rank: int) -> Path:
        return self.job_dir(job_id) / f"{rank}.addr"

    def _reported_port(self, job_id: str, rank: int) -> int | None:
        try:
            return reported_port(self._address_path(job_id, rank).read_text(encoding="utf-8"))
        except OSError:
            return None

    # -- launch --

    def _launch(self, tasks: Sequence[TaskLaunch]) -> list[TaskStatus]:
        layout = _local_layout(tasks)
        base = dict(os.environ)
        # `python` in a task's command means the platform's own interpreter (its virtual environment),
        # as an activated venv would make it, even when the server was started by its full path.
        bindir = str(Path(self.python).parent)
        if base.get("PATH", "").split(os.pathsep)[0] != bindir:
            base["PATH"] = bindir + os.pathsep + base.get("PATH", os.defpath)
        with self._launch_lock:
            return [self._launch_one(t, *layout[(t.job_id, t.rank)], base=base) for t in tasks]

    def _launch_one(
        self, task: TaskLaunch, local_rank: int, local_world_size: int, node_rank: int, base: dict[str, str]
    ) -> TaskStatus:
        job_dir = self.job_dir(task.job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        running = self._running_ident(task.job_id, task.rank, "")
        if running is not None:  # launched before a crash: adopt it instead of starting a twin
            return TaskStatus(
                task.job_id,
                task.rank,
                TaskPhase.RUNNING,
                message=f"already running as pid {running.pid}",
                handle=running.handle(),
            )
        for stale in (self._exit_path, self._stop_path, self._record_path, self._address_path):
            stale(task.job_id, task.rank).unlink(missing_ok=True)
        log_path = self.log_path(task.job_id, task.rank)
        env = task_environment(task, local_rank, local_world_size, node_rank, base)
        env[ADDRESS_FILE_ENV] = str(self._address_path(task.job_id, task.rank))
        cwd = Path(task.working_dir).expanduser() if task.working_dir else Path.cwd()
        problem = (
            f"working directory {str(cwd)!r} does not exist"
            if not cwd.is_dir()
            else _resolve_command(task.command, env, cwd)
        )
        if problem is not None:
            log_path.write_text(f"modelplane: {problem}\n", encoding="utf-8")
            hint = (
                "create it or fix the job's workingDir"
                if "working directory" in problem
                else "fix the job's command, or install the program it names"
            )
            return TaskStatus(
                task.job_id, task.rank, TaskPhase.FAILED, exit_code=127, message=f"{problem}; {hint}"
            )
        with open(log_path, "wb") as log, open(os.devnull, "rb") as devnull:
            proc = subprocess.Popen(
                [
                    self.python,
                    "-I",
                    str(RUNNER),
                    str(self._exit_path(task.job_id, task.rank)),
                    "--",
                    *task.command,
                ],
                cwd=cwd,
                env=env,
                stdin=devnull,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        _remember_child(proc)
        ident = ProcessId(proc.pid, _start_ticks(proc.pid))
        _write_json_atomically(
            self._record_path(task.job_id, task.rank),
            {
                "pid": ident.pid,
                "start_ticks": ident.start_ticks,
                "handle": ident.handle(),
                "job_name": task.job_name,
                "node": task.node,
                "command": task.command,
                "cwd": str(cwd),
                "launched_at": time.time(),
            },
        )
        return TaskStatus(
            task.job_id,
            task.rank,
            TaskPhase.RUNNING,
            message=f"pid {proc.pid} on {task.node}",
            handle=ident.handle(),
        )

    # -- watching --

    def _ident(self, job_id: str, rank: int, handle: str) -> ProcessId | None:
        """The task's process identity: from the stored handle, else from the task record."""
        ident = ProcessId.parse(handle) if handle else None
        if ident is not None:
            return ident
        record = _read_json(self._record_path(job_id, rank))
        return ProcessId.parse(str(record.get("handle", ""))) if record else None

    def _running_ident(self, job_id: str, rank: int, handle: str) -> ProcessId | None:
        _reap_children()
        ident = self._ident(job_id, rank, handle)
        if ident is None or not _is_running(ident) or self._exit_path(job_id, rank).exists():
            return None
        return ident

    def _known_ranks(self, job_id: str) -> list[int]:
        job_dir = self.job_dir(job_id)
        if not job_dir.is_dir():
            return []
        return sorted(int(p.stem) for p in job_dir.glob("*.json") if p.stem.isdigit())

    def _status_of(self, job_id: str, rank: int, handle: str) -> TaskStatus:
        ident = self._ident(job_id, rank, handle)
        exit_path = self._exit_path(job_id, rank)
        handle = ident.handle() if ident else handle
        stopped = self._stop_path(job_id, rank).exists()
        prefix = "stopped on request: " if stopped else ""
        if not exit_path.exists():
            if ident is None:
                return TaskStatus(
                    job_id,
                    rank,
                    TaskPhase.LOST,
                    handle=handle,
                    message="no process handle or task record for this task",
                )
            if _is_running(ident):
                return TaskStatus(
                    job_id,
                    rank,
                    TaskPhase.RUNNING,
                    handle=handle,
                    message=f"pid {ident.pid}",
                    port=self._reported_port(job_id, rank),
                )
        # The wrapper writes the exit file before it exits: look again now that it is gone.
        exit_record = _read_json(exit_path)
        if exit_record is None:
            if ident is not None:
                _kill_orphans(ident)
            if stopped:
                stop = _read_json(self._stop_path(job_id, rank)) or {}
                how = stop.get("killed", "SIGKILL")
                return TaskStatus(
                    job_id,
                    rank,
                    TaskPhase.FAILED,
                    exit_code=128 + signal.SIGKILL,
                    handle=handle,
                    message=f"{prefix}killed by {how} after the grace period",
                )
            return TaskStatus(
                job_id,
                rank,
                TaskPhase.LOST,
                handle=handle,
                message=f"process {ident.pid if ident else '?'} vanished without recording an "
                "exit code (killed with SIGKILL, or the machine restarted)",
            )
        returncode = int(exit_record.get("returncode", 1))
        exit_code, words = _describe_returncode(returncode)
        if exit_record.get("error"):
            words = str(exit_record["error"])
        phase = TaskPhase.SUCCEEDED if returncode == 0 else TaskPhase.FAILED
        return TaskStatus(job_id, rank, phase, exit_code=exit_code, handle=handle, message=prefix + words)

    def _poll(self, job_id: str, known: Sequence[TaskStatus]) -> list[TaskStatus]:
        _reap_children()
        if not known:  # nothing stored: report what this machine knows of the job
            return [self._status_of(job_id, rank, "") for rank in self._known_ranks(job_id)]
        return [s if s.phase in FINISHED_PHASES else self._status_of(job_id, s.rank, s.handle) for s in known]

    # -- stopping --

    def _stop(self, job_id: str, grace_seconds: float) -> None:
        _reap_children()
        live: list[tuple[int, ProcessId]] = []
        for rank in self._known_ranks(job_id):
            ident = self._ident(job_id, rank, "")
            if ident is None or self._exit_path(job_id, rank).exists():
                continue
            if not _is_running(ident):
                _kill_orphans(ident)
                continue
            _write_json_atomically(self._stop_path(job_id, rank), {"requested_at": time.time()})
            _signal_group(ident.pid, signal.SIGTERM)
            live.append((rank, ident))
        deadline = time.monotonic() + max(grace_seconds, 0.0)
        while live and time.monotonic() < deadline:
            time.sleep(0.05)
            _reap_children()
            live = [(rank, ident) for rank, ident in live if _is_running(ident)]
        for rank, ident in live:
            if _is_running(ident):
                _write_json_atomically(
                    self._stop_path(job_id, rank), {"killed": "SIGKILL", "grace_seconds": grace_seconds}
                )
                _signal_group(ident.pid, signal.SIGKILL)
        _reap_children()

    # -- logs --

    def _read_logs(self, job_id: str, rank: int, offset: int) -> tuple[str, int]:
        if offset < 0:
            raise InvalidSpec(
                f"log offset must be 0 or more, got {offset}", hint="start from offset 0", field="offset"
            )
        path = self.log_path(job_id, rank)
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                offset = min(offset, size)
                fh.seek(offset)
                data = fh.read(max(self.log_chunk_bytes, 1))
                keep = _complete_utf8_prefix(data)  # the writer may be in the middle of a character
                if keep == 0 and data:  # a chunk shorter than one character: take the whole one
                    data += fh.read(3)
                    keep = _complete_utf8_prefix(data)
        except FileNotFoundError:
            raise NotFound(
                f"no log for rank {rank} of job {job_id!r}",
                hint="the task has not been launched on this machine yet",
            ) from None
        return data[:keep].decode("utf-8", errors="replace"), offset + keep
