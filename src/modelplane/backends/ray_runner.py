"""The Ray actor that runs one task's command as a subprocess on the Ray node it was pinned to.

This module imports only the standard library at the top: the Ray backend ships it to the workers
by value (cloudpickle), so that a Ray cluster needs neither modelplane installed nor our source on
its path. The actor outlives the command on purpose: it keeps the exit code and the log until the
backend has copied both to the control plane, then the backend kills it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

# Variables of the control plane or of Ray's own worker that must not leak into a user's task.
_DROP_PREFIXES = ("MODELPLANE_",)
ADDRESS_FILE_ENV = "MODELPLANE_ADDRESS_FILE"  # as backends.base (not imported: this module ships alone)


def _describe(returncode: int) -> tuple[int, str]:
    if returncode < 0:
        signum = -returncode
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return 128 + signum, f"killed by {name} (signal {signum})"
    return returncode, f"exited with code {returncode}"


class TaskRunner:
    """One task: ``start`` spawns the command, ``snapshot`` reports it, ``terminate`` ends it."""

    def __init__(self, job_id: str, rank: int) -> None:
        self.job_id = job_id
        self.rank = rank
        self.dir = tempfile.mkdtemp(prefix=f"modelplane-{rank}-")
        self.log_path = os.path.join(self.dir, "task.log")
        self.address_path = os.path.join(self.dir, "address.json")  # a serving task writes where it listens
        self.ip = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.error: str | None = None
        self.stopped = False

    def where(self) -> dict[str, Any]:
        """The Ray node this actor really runs on, as Ray sees it."""
        import ray

        ctx = ray.get_runtime_context()
        util: Any = ray.util
        return {"node_id": ctx.get_node_id(), "ip": util.get_node_ip_address(), "pid": os.getpid()}

    def start(self, command: list[str], env: dict[str, str], cwd: str | None) -> dict[str, Any]:
        where = self.where()
        full = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_PREFIXES)}
        # `python` in a task's command means the interpreter of the Ray worker, as on the local backend.
        bindir = os.path.dirname(sys.executable)
        full["PATH"] = bindir + os.pathsep + full.get("PATH", os.defpath)
        full.update(env)
        full["MODELPLANE_RAY_NODE_ID"] = where["node_id"]
        full["MODELPLANE_RAY_NODE_IP"] = where["ip"]
        # A server listens where its endpoint says (serve.replica) and reports the port it bound
        # there (port 0: its own pick).
        full.setdefault("MODELPLANE_HOST", where["ip"])
        full[ADDRESS_FILE_ENV] = self.address_path
        self.ip = where["ip"]
        workdir = cwd or os.getcwd()
        problem = None
        if not os.path.isdir(workdir):
            problem = f"working directory {workdir!r} does not exist on Ray node {where['ip']}"
        elif not command or not command[0]:
            problem = "the task has an empty command"
        elif "/" in command[0]:
            exe = os.path.join(workdir, command[0])
            if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
                problem = f"command {command[0]!r} not found or not executable on Ray node {where['ip']}"
        elif shutil.which(command[0], path=full.get("PATH")) is None:
            problem = f"command {command[0]!r} not found on PATH of Ray node {where['ip']}"
        if problem is not None:
            with open(self.log_path, "w", encoding="utf-8") as fh:
                fh.write(f"modelplane: {problem}\n")
            self.returncode, self.error = 127, problem
            return {**where, "started": False, "error": problem}
        with open(self.log_path, "wb") as log, open(os.devnull, "rb") as devnull:
            self.proc = subprocess.Popen(
                command,
                cwd=workdir,
                env=full,
                stdin=devnull,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        return {**where, "started": True, "task_pid": self.proc.pid}

    def _refresh(self) -> None:
        if self.returncode is None and self.proc is not None:
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc

    def snapshot(self, offset: int, limit: int) -> dict[str, Any]:
        """State plus the log bytes from ``offset`` (at most ``limit``), in one round trip."""
        self._refresh()
        data = b""
        size = 0
        with contextlib.suppress(FileNotFoundError), open(self.log_path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(min(max(offset, 0), size))
            data = fh.read(max(limit, 1))
        out: dict[str, Any] = {
            "log": data,
            "size": size,
            "stopped": self.stopped,
            "error": self.error,
            "returncode": None,
            "exit_code": None,
            "message": "running",
            "ip": self.ip,
            "port": self._reported_port(),
        }
        if self.returncode is not None:
            code, words = _describe(self.returncode)
            out.update(returncode=self.returncode, exit_code=code, message=self.error or words)
        return out

    def _reported_port(self) -> int | None:
        """The port the task wrote to its address file (as ``backends.base.reported_port`` reads it)."""
        try:
            with open(self.address_path, encoding="utf-8") as fh:
                port = json.load(fh).get("port")
        except (OSError, ValueError, AttributeError):
            return None
        return port if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 else None

    def terminate(self, grace_seconds: float) -> dict[str, Any]:
        """SIGTERM the task's process group, SIGKILL it after the grace period."""
        self._refresh()
        if self.proc is not None and self.returncode is None:
            self.stopped = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + max(grace_seconds, 0.0)
            while self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self._refresh()
        return self.snapshot(0, 0)

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
