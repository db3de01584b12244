"""Sensitive data end to end on a real control plane: the API over HTTP, the real scheduler and job
controller, the local backend running real task processes, the CLI as a user runs it.

The data owner protects a folder with ``modelplane data protect`` (files encrypted in place), the
nodes attest with the real quotes of ``tee-dcap`` (the control plane's clock runs inside their
collateral's validity window), a confidential job reads the data through
``modelplane.data.sensitive.open`` with the key the control plane releases to it, and a job without
``spec.tee`` is refused at apply when it declares the dataset and at key release when it does not.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from modelplane.api.app import create_app
from modelplane.api.security import ApiSecurity, KindAwareRiskScorer, bootstrap_admin
from modelplane.backends.local import LocalBackend
from modelplane.control.base import ReconcileLoop
from modelplane.control.jobs import JobController
from modelplane.control.scheduling import SchedulerController
from modelplane.platform import make_scheduler
from modelplane.store import Store
from modelplane.testing.postgres import free_port
from tests.api.test_datasets_api import CLUSTER, RISK, T0, job, quote_body

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

READER = """
import hashlib, sys
from modelplane.data import sensitive
try:
    with sensitive.open(sys.argv[1], "r") as f:
        rows = f.read().splitlines()
except sensitive.KeyReleaseDenied as exc:
    print("REFUSED:", exc.message, flush=True)
    sys.exit(3)
print("rows", len(rows), "sha", hashlib.sha256("\\n".join(rows).encode()).hexdigest(), flush=True)
"""


class ControlPlane:
    """Store, API (uvicorn on a free port), scheduler and job controller, on a clock that runs from T0."""

    def __init__(self, db_url: str, tmp: Path) -> None:
        started = time.time()
        self.clock = lambda: T0 + (time.time() - started)
        self.store = Store(db_url, clock=self.clock)
        self.sec = ApiSecurity(self.store, tmp / "home", fast_hashing=True, risk=KindAwareRiskScorer(RISK))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend = LocalBackend(tmp / "backend")
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.store, self.backend, security=self.sec),
                                                    port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.loop = ReconcileLoop([SchedulerController(self.store, make_scheduler("default"), self.clock),
                                   JobController(self.store, self.backend, self.clock, stop_grace_seconds=2)], 0.2)
        self.admin_token = bootstrap_admin(self.sec, time.time()) or ""

    def start(self) -> ControlPlane:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        self.loop.start()
        return self

    def stop(self) -> None:
        self.loop.stop()
        jobs, _ = self.store.list_jobs(limit=1000)
        for j in jobs:
            self.backend.stop(j.id, 2)
        self.server.should_exit = True
        self.thread.join(10)
        self.sec.close()
        self.store.close()

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def wait(self, name: str, timeout: float = 90) -> dict[str, Any]:
        with self.client(self.admin_token) as c:
            deadline = time.time() + timeout
            while time.time() < deadline:
                body: dict[str, Any] = c.get(f"/jobs/{name}").json()
                if body["state"] in ("Succeeded", "Failed"):
                    return body
                time.sleep(0.3)
        raise AssertionError(f"{name} is still {body['state']}")

    def logs(self, name: str) -> str:
        with self.client(self.admin_token) as c:
            return "".join(i["text"] for i in c.get(f"/jobs/{name}/logs").json()["items"])


@pytest.fixture
def plane(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlPlane]:
    cp = ControlPlane(db_url, tmp_path)
    monkeypatch.setenv("MODELPLANE_API_URL", cp.url)  # what the job controller tells the tasks
    yield cp.start()
    cp.stop()


def reader_job(name: str, data: Path, tee: str | None = None, declare: bool = True) -> dict[str, Any]:
    doc = job(name, tee=tee, datasets=[str(data)] if declare else [])
    doc["spec"]["template"]["command"] = [sys.executable, "-c", READER, str(data / "patients.csv")]
    return doc


@pytest.mark.timeout(300)
def test_a_confidential_job_reads_sensitive_data_and_others_are_refused(plane: ControlPlane, tmp_path: Path) -> None:
    data = tmp_path / "patients"
    data.mkdir()
    plain = "\n".join(["id,age,diagnosis"] + [f"{i},{20 + i % 60},code-{i % 7}" for i in range(5000)])
    (data / "patients.csv").write_text(plain)
    admin = plane.client(plane.admin_token)
    assert admin.post("/cluster/import", json=CLUSTER).status_code == 200
    assert admin.post("/teams", json={"name": "research"}).status_code == 201
    assert admin.post("/service-accounts", json={"name": "owner", "team": "research"}).status_code == 201
    owner_key = admin.post("/service-accounts/owner/api-keys",
                           json={"scopes": ["datasets:read", "datasets:write"]}).json()["key"]

    # the data owner protects the folder with the CLI: encrypted in place, key handed to the platform
    env = {"MODELPLANE_API_URL": plane.url, "MODELPLANE_TOKEN": owner_key, "MODELPLANE_HOME": str(tmp_path / "cli"),
           "PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "COLUMNS": "400"}
    r = subprocess.run([sys.executable, "-m", "modelplane", "data", "protect", str(data)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"file://{data} is sensitive: encrypted 1 file(s)" in r.stdout
    assert b"diagnosis" not in (data / "patients.csv").read_bytes()
    r = subprocess.run([sys.executable, "-m", "modelplane", "data", "protect", str(data)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "already sensitive" in r.stderr and "Traceback" not in r.stderr

    # both TEE nodes attest with real quotes, verified by the control plane
    for node, name in (("tdx-0", "sample/tdx_quote"), ("sgx-0", "sample/sgx_quote")):
        assert admin.post(f"/nodes/{node}/attestation", json=quote_body(name)).json()["ok"]

    # declared but not confidential: refused at apply, naming the dataset and the fix
    refused = admin.post("/jobs", json=reader_job("leaky", data))
    assert refused.status_code == 422
    assert refused.json()["message"] == f"dataset file://{data} is sensitive; job leaky is not confidential: set spec.tee"

    # confidential, declared, on an attested node: reads the plaintext
    assert admin.post("/jobs", json=reader_job("confidential", data, tee="any")).status_code == 201
    # not confidential and not declared: passes apply, but its task is refused the key
    assert admin.post("/jobs", json=reader_job("sneaky", data, declare=False)).status_code == 201

    done = plane.wait("confidential")
    logs = plane.logs("confidential")
    assert done["state"] == "Succeeded", logs
    assert done["placement"][0]["node"] in ("tdx-0", "sgx-0")
    assert f"rows 5001 sha {hashlib.sha256(plain.encode()).hexdigest()}" in logs

    done = plane.wait("sneaky")
    logs = plane.logs("sneaky")
    assert done["state"] == "Failed"
    assert f"REFUSED: key release for file://{data} refused: dataset file://{data} is sensitive; job sneaky is not " \
           "confidential: set spec.tee" in logs

    items = admin.get("/audit/entries", params={"limit": 1000}).json()["items"]
    releases = [i["entry"] for i in items if i["entry"] and i["entry"]["operation"].endswith("/key-release")]
    assert [(e["operator"], e["outcome"]) for e in releases] in (
        [("job:confidential", "succeeded"), ("job:sneaky", "denied")],
        [("job:sneaky", "denied"), ("job:confidential", "succeeded")])
    admin.close()
