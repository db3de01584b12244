"""A real ``modelplane up`` process on a free port, and the CLI run as a subprocess against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from modelplane.testing.postgres import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    home: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    cluster_file: Path = REPO / "examples" / "cluster.yaml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return str(yaml.safe_load((self.home / "credentials").read_text())["token"])

    def start(self, timeout: float = 60) -> Server:
        log = open(self.home / "server.log", "ab")  # noqa: SIM115 (kept open for the process's lifetime)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelplane", "up", "--cluster", str(self.cluster_file),
             "--port", str(self.port)],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"modelplane up exited: {(self.home / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("modelplane up did not answer within the timeout")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "modelplane", *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/api/v1", headers={"Authorization": f"Bearer {self.token}"},
                            timeout=30)


def make_server(tmp_path: Path, database_url: str | None = None) -> Server:
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLANE_")}
    env.update({"MODELPLANE_HOME": str(home), "MODELPLANE_PORT": str(port),
                "MODELPLANE_API_URL": f"http://127.0.0.1:{port}", "MODELPLANE_RECONCILE_INTERVAL": "0.2",
                "PYTHONPATH": str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", ""),
                "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")})
    if database_url:
        env["MODELPLANE_DATABASE_URL"] = database_url
    return Server(home, port, env)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = make_server(tmp_path).start()
    yield s
    s.stop()


def start_api_process(server: Server, timeout: float = 60) -> subprocess.Popen[bytes]:
    """``modelplane api`` alone (no controllers) on the server's port, once it answers /healthz."""
    api = subprocess.Popen([sys.executable, "-m", "modelplane", "api", "--cluster",
                            str(REPO / "examples" / "cluster.yaml"), "--port", str(server.port)],
                           cwd=REPO, env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return api
        except httpx.HTTPError:
            time.sleep(0.2)
    api.kill()
    raise RuntimeError("modelplane api did not answer within the timeout")


def start_controller(server: Server, name: str) -> subprocess.Popen[bytes]:
    """``modelplane run-controller NAME`` against the server's database."""
    return subprocess.Popen([sys.executable, "-m", "modelplane", "run-controller", name], cwd=REPO,
                            env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
