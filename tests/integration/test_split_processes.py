"""Production shape: PostgreSQL, the API and each controller as its own process."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import fresh_postgres_url
from tests.integration.conftest import REPO, make_server, start_api_process, start_controller

pytestmark = pytest.mark.integration


def test_api_and_controllers_as_separate_processes(tmp_path, postgres_server):
    server = make_server(tmp_path, fresh_postgres_url(postgres_server))
    api = start_api_process(server)
    controllers: list[subprocess.Popen[bytes]] = []
    try:
        # Without controllers a job is accepted but nothing runs it.
        r = server.cli("apply", "-f", str(REPO / "examples" / "pipeline.yaml"))
        assert r.returncode == 0, r.stderr
        time.sleep(1.5)
        with server.client() as c:
            assert c.get("/jobs/features-daily").json()["state"] == "Pending"
        for name in ("scheduler", "jobs", "node-agent", "node-health"):
            controllers.append(start_controller(server, name))
        with server.client() as c:
            deadline = time.time() + 240
            while time.time() < deadline:
                job = c.get("/jobs/features-daily").json()
                if job["state"] in ("Succeeded", "Failed"):
                    break
                time.sleep(0.3)
            assert job["state"] == "Succeeded", job
            logs = c.get("/jobs/features-daily/logs").json()["items"]
            # the runner's JSON report names the pipeline and counts what it wrote
            assert '"pipeline": "features-daily"' in logs[0]["text"], logs[0]["text"][-2000:]
        r = server.cli("run-controller", "nonsense")
        assert r.returncode == 2 and "scheduler" in r.stderr
    finally:
        for p in [*controllers, api]:
            p.terminate()
            p.wait(10)
