"""Start replicas as child processes (local backend, tests, benchmarks) and wait until they are ready."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from modelplane.backends.base import ADDRESS_FILE_ENV, reported_port
from modelplane.serve.batching import BatchingConfig
from modelplane.serve.errors import NoReplicaAvailable


def free_port() -> int:
    """A port free on this host now (another process may take it before it is bound: prefer port 0
    and the address the replica reports, as ``start_replica`` does)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def replica_command(
    model_name: str, model_path: str, port: int, batching: BatchingConfig, threads: int = 1
) -> list[str]:
    """The argv that runs one replica (``python -m modelplane.serve.replica ...``)."""
    return [
        sys.executable,
        "-m",
        "modelplane.serve.replica",
        "--model-name",
        model_name,
        "--model-path",
        model_path,
        "--port",
        str(port),
        "--max-batch-size",
        str(batching.max_batch_size),
        "--max-queue-delay-ms",
        str(batching.max_queue_delay_s * 1000.0),
        "--max-queue-rows",
        str(batching.max_queue_rows),
        "--threads",
        str(threads),
    ]


def start_replica(
    model_name: str,
    model_path: str,
    *,
    port: int | None = None,
    batching: BatchingConfig | None = None,
    threads: int = 1,
    ready_timeout_s: float = 60.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Spawn a replica and block until ``/v2/health/ready`` answers 200; returns the process and its URL.

    Without ``port`` the replica binds a port of its own choosing (port 0) and the URL is built from
    the port it reports in its address file, so no other process can take the port in between.
    """
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="modelplane-replica-") as tmp:
        address_file = Path(tmp) / "address.json"
        env[ADDRESS_FILE_ENV] = str(address_file)
        command = replica_command(model_name, model_path, port or 0, batching or BatchingConfig(), threads)
        proc = subprocess.Popen(command, env=env)
        try:
            bound = wait_reported(address_file, ready_timeout_s, proc)
            url = f"http://127.0.0.1:{bound}"
            wait_ready(url, ready_timeout_s, proc)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    return proc, url


def wait_reported(address_file: Path, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> int:
    """The port a replica reports in ``address_file`` once it listens (it writes the file whole)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            port = reported_port(address_file.read_text(encoding="utf-8"))
            if port is not None:
                return port
        if proc is not None and proc.poll() is not None:
            raise NoReplicaAvailable(
                f"replica exited with code {proc.returncode} before it listened",
                hint="run the replica command by hand to see its error",
            )
        time.sleep(0.05)
    raise NoReplicaAvailable(
        f"replica did not report its address within {timeout_s:.0f} s", hint="check the replica's log"
    )


def wait_ready(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise NoReplicaAvailable(
                f"replica at {url} exited with code {proc.returncode} before it was ready",
                hint="run the replica command by hand to see its error",
            )
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise NoReplicaAvailable(
        f"replica at {url} not ready after {timeout_s:.0f} s", hint="check the replica's log"
    )
