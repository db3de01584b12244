"""Production shape for serving: PostgreSQL, the API (with the gateway) and each controller as its own
process; replica lists and load samples travel through the database."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
import yaml

from tests.conftest import fresh_postgres_url
from tests.integration.conftest import make_server, start_api_process, start_controller
from tests.integration.test_deployment_live import EXAMPLE, MODEL, _kill, _replica_pids

pytestmark = pytest.mark.integration


def test_a_deployment_served_by_an_api_process_and_separate_controllers(tmp_path, postgres_server):
    import onnxruntime as ort

    server = make_server(tmp_path, fresh_postgres_url(postgres_server))
    api = start_api_process(server)
    controllers: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("scheduler", "jobs", "node-agent", "deployments"):
            controllers.append(start_controller(server, name))
        doc = yaml.safe_load(EXAMPLE.read_text())
        doc["spec"]["model"] = str(MODEL)  # a file this time: no registry needed
        doc["spec"].pop("autoscaling")
        manifest = tmp_path / "d.yaml"
        manifest.write_text(yaml.safe_dump(doc))
        r = server.cli("apply", "-f", str(manifest))
        assert r.returncode == 0, r.stderr
        x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
        want = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        with server.client() as c:
            deadline = time.time() + 90
            while c.get("/deployments/digits").json()["ready"] < 1:
                assert time.time() < deadline, c.get("/deployments/digits").json()["status"]
                time.sleep(0.3)
            r = c.post("/deployments/digits/infer", json={"inputs": x.tolist()})
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(np.asarray(r.json()["outputs"]), want, rtol=1e-5, atol=1e-5)
            # The API process reported the gateway's load; the controller's status carries it back.
            deadline = time.time() + 10
            while c.get("/deployments/digits").json()["loadAt"] is None:
                assert time.time() < deadline, "the gateway never reported load"
                time.sleep(0.3)
            assert c.delete("/deployments/digits").status_code == 200
            deadline = time.time() + 30
            while c.get("/deployments/digits").status_code != 404:
                assert time.time() < deadline, "deployment not deleted"
                time.sleep(0.3)
    finally:
        for p in [*controllers, api]:
            p.terminate()
            p.wait(10)
        for pid in _replica_pids(server.home):
            _kill(pid)
