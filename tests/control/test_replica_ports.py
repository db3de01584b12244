"""A replica that picks its own port (as on a backend whose tasks run on other machines) reports it,
and the job controller, the deployment controller and the gateway follow the port it reported.

Real processes: the scheduler places the replica, the local backend launches it (told to let its
serving tasks choose their ports), the replica binds port 0 and writes where it listens; the
gateway then serves a request through it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import numpy as np

from modelplane.backends.local import LocalBackend
from modelplane.control.base import ReconcileLoop
from modelplane.control.deployments import DeploymentController
from modelplane.control.jobs import JobController
from modelplane.control.scheduling import SchedulerController
from modelplane.core.job import JobState
from modelplane.platform import make_scheduler
from modelplane.serve.gateway import DeploymentConfig, Gateway, create_gateway_app
from modelplane.serve.runtime import OnnxModel
from modelplane.store import Store
from tests.helpers import gpu_node, queue

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "examples" / "models" / "digits-mlp.onnx"


def _doc() -> dict[str, object]:
    return {
        "apiVersion": "modelplane/v1",
        "kind": "InferenceDeployment",
        "metadata": {"name": "digits", "team": "product"},
        "spec": {
            "queue": "inference",
            "model": str(MODEL),
            "replicas": 1,
            "template": {
                "command": ["python", "-m", "modelplane.serve.replica", "--max-batch-size", "8"],
                "resources": {"cpu": "100m", "memory": "128Mi"},
            },
        },
    }


def _infer(endpoints: list[str], rows: list[list[float]]) -> httpx.Response:
    async def go() -> httpx.Response:
        gw = Gateway()
        gw.add_deployment(DeploymentConfig("digits", "digits"))
        gw.set_replicas("digits", endpoints)  # what the API's refresher does with the deployment's status
        transport = httpx.ASGITransport(app=create_gateway_app(gw))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            r = await c.post("/v1/deployments/digits/infer", json={"inputs": rows})
        await gw.aclose()
        return r

    return asyncio.run(go())


def test_a_replica_told_port_zero_is_routed_to_at_the_port_it_reported(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'modelplane.db'}")
    backend = LocalBackend(tmp_path / "backend", tasks_choose_ports=True)
    try:
        store.upsert_node(gpu_node("n1"))
        store.upsert_queue(queue("inference", team="product"))
        loop = ReconcileLoop(
            [
                DeploymentController(
                    store,
                    time.time,
                    cache_dir=tmp_path / "cache",
                    registry_url="",
                    stable_s=2.0,
                    probe_timeout_s=2.0,
                ),
                SchedulerController(store, make_scheduler("default"), time.time),
                JobController(store, backend, time.time, stop_grace_seconds=5),
            ]
        )
        store.create_deployment(_doc())
        deadline = time.time() + 120
        while time.time() < deadline:
            loop.run_once()
            if store.get_deployment("digits").status.get("ready") == 1:
                break
            time.sleep(0.2)
        status = store.get_deployment("digits").status
        assert status.get("ready") == 1, status
        [job] = [
            j for j in store.list_jobs(kind="InferenceDeployment", limit=10)[0] if j.state is JobState.RUNNING
        ]
        [task] = store.list_tasks(job.id)
        # The replica was told port 0 and reported the one it bound; that is the endpoint stored
        # for its task and the one the deployment publishes to the gateway.
        reported = (backend.job_dir(job.id) / "0.addr").read_text()
        wrapper = json.loads((backend.job_dir(job.id) / "0.json").read_text())["pid"]
        assert b"MODELPLANE_PORT=0" in Path(f"/proc/{wrapper}/environ").read_bytes().split(
            b"\0"
        )  # as launched
        port = int(task.endpoint.rsplit(":", 1)[1])
        assert task.endpoint == f"http://127.0.0.1:{port}" and f'"port": {port}' in reported
        assert status["endpoints"] == [task.endpoint]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        model = OnnxModel(MODEL.read_bytes())
        x = np.random.default_rng(5).standard_normal((3, *model.input.row_shape)).astype(np.float32)
        r = _infer(status["endpoints"], x.tolist())
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()["outputs"]), model.run(x), rtol=1e-5, atol=1e-6)
    finally:
        for j in store.list_jobs(limit=100)[0]:
            backend.stop(j.id, 2.0)
        store.close()
