"""Both kinds of FederatedJob through `modelplane apply` on a running platform, to Succeeded.

The example manifests are applied as users would (only the number of rounds/epochs is cut for
time); the tasks' outputs are then read from the job's directory under TMPDIR.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import REPO, Server, make_server
from tests.integration.test_platform import wait_state

pytestmark = pytest.mark.integration


def _apply(server: Server, tmp: Path, example: str, replace: tuple[str, str]) -> str:
    text = (REPO / "examples" / example).read_text()
    assert replace[0] in text
    manifest = tmp / example
    manifest.write_text(text.replace(*replace))
    r = server.cli("apply", "-f", str(manifest))
    assert r.returncode == 0, r.stderr
    return str(yaml.safe_load(text)["metadata"]["name"])


def _job_dir(tmp: Path, server: Server, name: str) -> Path:
    with server.client() as c:
        job_id = c.get(f"/jobs/{name}").json()["id"]
    return tmp / "fl" / "modelplane-fl" / job_id


@pytest.mark.timeout(1200)
def test_horizontal_and_vertical_federated_jobs_succeed_through_apply(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    (tmp_path / "fl").mkdir()
    server.env["TMPDIR"] = str(tmp_path / "fl")
    server.start()
    try:
        horizontal = _apply(server, tmp_path, "federated-job.yaml", ("--rounds 3", "--rounds 1"))
        vertical = _apply(server, tmp_path, "vertical-lr-job.yaml", ("--epochs 3", "--epochs 1"))
        for name in (horizontal, vertical):
            job = wait_state(server, name, {"Succeeded", "Failed"}, timeout=800)
            logs = server.cli("logs", name).stdout
            assert job["state"] == "Succeeded", f"{job}\n{logs[-4000:]}"

        summary = json.loads((_job_dir(tmp_path, server, horizontal) / "out" / "summary.json").read_text())
        assert summary["secagg"] is True and summary["rounds"] == 1
        assert summary["parties"] == ["clinic-a", "clinic-b", "clinic-c", "clinic-d", "clinic-e"]
        assert summary["accuracy"] > 0.5  # one round of FedAvg on skewed shards, far above chance (0.1)
        assert (_job_dir(tmp_path, server, horizontal) / "out" / "model.npz").is_file()

        vdir = _job_dir(tmp_path, server, vertical)
        guest = json.loads((vdir / "guest.json").read_text())
        assert guest["test_auc"] > 0.95
        assert (vdir / "pki" / "ca.pem").is_file()  # this job's own CA
    finally:
        server.stop()
