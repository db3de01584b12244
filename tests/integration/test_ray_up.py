"""`MODELPLANE_BACKEND=ray modelplane up` on a real two-node Ray cluster started on this machine:
nodes are imported from Ray and the example DDP job runs one rank per Ray node to Succeeded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelplane.backends.ray_local_cluster import RAY_INSTALL_HINT, LocalRayCluster, ray_command
from tests.integration.conftest import REPO, Server, make_server

pytestmark = pytest.mark.integration


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[LocalRayCluster]:
    try:
        import ray  # noqa: F401

        ray_bin = ray_command()
    except Exception as exc:
        pytest.fail(f"this test needs Ray: {RAY_INSTALL_HINT} ({exc})", pytrace=False)
    cluster = LocalRayCluster(ray_bin, state_dir=str(tmp_path / "ray-state"))
    try:
        cluster.start_head({"node_a": 1}, {"modelplane.io/node-name": "ray-a"})
        cluster.connect()  # the worker waits for registration through this connection
        cluster.add_worker({"node_b": 1}, {"modelplane.io/node-name": "ray-b"})
        yield cluster
    finally:
        cluster.teardown()


def test_example_job_runs_on_ray(tmp_path: Path, ray_cluster: LocalRayCluster) -> None:
    server: Server = make_server(tmp_path)
    server.env.update({"MODELPLANE_BACKEND": "ray", "MODELPLANE_RAY_ADDRESS": ray_cluster.address})
    server.cluster_file = REPO / "examples" / "ray-queues.yaml"
    server.start(timeout=120)
    try:
        r = server.cli("get", "nodes")
        assert "ray-a" in r.stdout and "ray-b" in r.stdout, r.stdout + r.stderr
        r = server.cli("apply", "-f", str(REPO / "examples" / "training-job-cpu.yaml"))
        assert r.returncode == 0, r.stderr
        with server.client() as c:
            deadline = time.time() + 240
            while time.time() < deadline:
                job = c.get("/jobs/ddp-cpu").json()
                if job["state"] in ("Succeeded", "Failed"):
                    break
                time.sleep(0.5)
        assert job["state"] == "Succeeded", job
        assert sorted(a["node"] for a in job["placement"]) == ["ray-a", "ray-b"]
        logs = server.cli("logs", "ddp-cpu").stdout
        assert "[rank 0]" in logs and "[rank 1]" in logs and "weights identical across 2 ranks" in logs
    finally:
        server.stop()
