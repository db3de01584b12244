"""A throwaway multi-node Ray cluster on this machine: one ``ray start`` per node, each with its own
temp dir, for tests, benchmarks and trying the Ray backend without a real cluster.

Every Ray process of the cluster is found by its node's temp dir, its node id or the cluster's
port, and ended by pid -- never with ``ray stop``, which ends every Ray on the machine. A node is
"killed" the way a machine dies: SIGKILL to its raylet, agents, workers and the tasks they run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REGISTER_SECONDS = 90.0
RAY_INSTALL_HINT = (
    "install Ray: pip install 'modelplane[ray]' (into the venv: .venv/bin/pip install 'ray[default]')"
)

# Fast failure detection: the GCS declares a node dead after ~3 missed 1 s health checks.
FAST_HEALTH = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def ray_command() -> str:
    """The ``ray`` CLI of this interpreter's environment."""
    path = Path(sys.executable).with_name("ray")
    if not path.exists():
        found = shutil.which("ray")
        if found is None:
            from modelplane.backends.base import BackendError

            raise BackendError(f"no `ray` command next to {sys.executable} or on PATH", hint=RAY_INSTALL_HINT)
        return found
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def _processes_mentioning(markers: Sequence[str]) -> set[int]:
    """Our own processes whose command line names one of ``markers``, with all their descendants."""
    uid = os.getuid()
    roots = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if entry.stat().st_uid != uid:
                    continue
            except OSError:
                continue
            cmd = _cmdline(int(entry.name))
            if any(m in cmd for m in markers):
                roots.add(int(entry.name))
    tree = _children()
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(tree.get(pid, []))
    return found


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class RayNode:
    """One ``ray start`` of the cluster, known by its own temp dir."""

    temp_dir: str
    resources: dict[str, float]
    labels: dict[str, str]
    node_id: str = ""
    killed: bool = False

    def processes(self) -> set[int]:
        return _processes_mentioning([self.temp_dir])

    def kill(self) -> None:
        """Node death: SIGKILL the raylet, its agents, workers and the tasks they run."""
        self.killed = True
        _kill(self.processes())


@dataclass
class LocalRayCluster:
    """Head and workers on this machine; each node gets one CPU and little object-store memory."""

    ray_bin: str
    address: str = ""
    nodes: list[RayNode] = field(default_factory=list)
    state_dir: str = ""
    client_port: int = 0  # the head's Ray Client server: ray://127.0.0.1:<client_port>

    def _start(
        self,
        args: list[str],
        resources: dict[str, float],
        labels: dict[str, str],
        num_gpus: int = 0,
        node_ip: str = "127.0.0.1",
    ) -> RayNode:
        temp_dir = tempfile.mkdtemp(prefix="mpray", dir="/tmp")  # short: Ray's socket paths are limited
        node = RayNode(temp_dir, resources, labels)
        self.nodes.append(node)
        cmd = [
            self.ray_bin,
            "start",
            *args,
            f"--node-ip-address={node_ip}",
            "--num-cpus=1",
            f"--num-gpus={num_gpus}",
            f"--resources={json.dumps(resources)}",
            "--labels=" + ",".join(f"{k}={v}" for k, v in labels.items()),
            f"--temp-dir={temp_dir}",
            "--object-store-memory=78643200",
            "--disable-usage-stats",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
        ]
        env = {**os.environ, **FAST_HEALTH, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("PYTHONPATH", None)  # the cluster needs no modelplane: the runner travels by value
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"`ray start` failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return node

    def start_head(self, resources: dict[str, float], labels: dict[str, str], num_gpus: int = 0) -> RayNode:
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        self.client_port = _free_port()
        return self._start(
            [
                "--head",
                f"--port={port}",
                "--include-dashboard=false",
                f"--dashboard-port={_free_port()}",
                f"--ray-client-server-port={self.client_port}",
            ],
            resources,
            labels,
            num_gpus,
        )

    def add_worker(
        self, resources: dict[str, float], labels: dict[str, str], node_ip: str = "127.0.0.1"
    ) -> RayNode:
        """A worker node; ``node_ip`` another loopback address (127.0.0.2) makes it a node whose tasks
        are reached at an address of their own, as on another machine, while all runs on this one."""
        node = self._start([f"--address={self.address}"], resources, labels, node_ip=node_ip)
        self._wait_nodes()
        return node

    def _wait_nodes(self) -> None:
        import ray

        deadline = time.monotonic() + REGISTER_SECONDS
        while True:
            if ray.is_initialized():
                alive = [n for n in ray.nodes() if n["Alive"]]  # type: ignore[no-untyped-call]
                for node in self.nodes:
                    node.node_id = ""
                    for n in alive:
                        if n["RayletSocketName"].startswith(node.temp_dir):
                            node.node_id = n["NodeID"]
                if all(n.node_id for n in self.nodes if not n.killed):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("Ray nodes did not all register with the head in time")
            time.sleep(0.2)

    def node_named(self, name: str) -> RayNode:
        """The node started with ``modelplane.io/node-name=<name>``."""
        return next(n for n in self.nodes if n.labels.get("modelplane.io/node-name") == name)

    def connect(self) -> None:
        import ray

        ray.init(
            address=self.address,
            namespace="modelplane",
            logging_level="ERROR",  # type: ignore[arg-type]
            log_to_driver=False,
        )
        self._wait_nodes()

    def teardown(self) -> None:
        import ray

        with contextlib.suppress(Exception):
            ray.shutdown()
        markers = [n.temp_dir for n in self.nodes] + [
            f"--node-id={n.node_id}" for n in self.nodes if n.node_id
        ]
        if self.address:  # the head's client server names only the GCS address (with the node's own IP)
            markers.append(f":{self.address.rsplit(':', 1)[1]} ")
        _kill(_processes_mentioning(markers))
        for node in self.nodes:
            shutil.rmtree(node.temp_dir, ignore_errors=True)
