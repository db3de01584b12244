"""Both kinds of FederatedJob through `modelplane apply` on a running platform, to Succeeded.

The example manifests are applied as users would (only the number of rounds/epochs is cut for
time: for the horizontal job in ``spec.rounds``, which must reach the server task); the tasks'
outputs are then read from the job's directory under TMPDIR, and the horizontal job's final model
from the model registry and the lineage graph, through the API.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


def _check_registered_model(onnx_file: Path, npz: Path) -> None:
    """The registered ONNX file computes the federation's model: same predictions as numpy on real digits."""
    import onnxruntime as ort

    from modelplane.privacy.horizontal import model
    from modelplane.privacy.horizontal.data import digits_split

    with np.load(npz) as z:
        params = [z["W"], z["b"]]
    _, _, x, _ = digits_split()
    sess = ort.InferenceSession(onnx_file.read_bytes(), providers=["CPUExecutionProvider"])
    probs = sess.run(None, {"input": x.astype(np.float32)})[0]
    assert probs.shape == (len(x), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (np.argmax(probs, axis=1) == model.predict(params, x)).mean() > 0.99  # float32 ties aside


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
        horizontal = _apply(server, tmp_path, "federated-job.yaml", ("rounds: 3", "rounds: 2"))
        vertical = _apply(server, tmp_path, "vertical-lr-job.yaml", ("--epochs 3", "--epochs 1"))
        for name in (horizontal, vertical):
            job = wait_state(server, name, {"Succeeded", "Failed"}, timeout=800)
            logs = server.cli("logs", name).stdout
            assert job["state"] == "Succeeded", f"{job}\n{logs[-4000:]}"

        out = _job_dir(tmp_path, server, horizontal) / "out"
        summary = json.loads((out / "summary.json").read_text())
        # spec.rounds (2, not the server's own default of 30) is what ran, round by round.
        assert summary["secagg"] is True and summary["rounds"] == 2 and summary["settings"]["rounds"] == 2
        assert [r["round"] for r in json.loads((out / "metrics.json").read_text())] == [1, 2]
        assert summary["parties"] == ["clinic-a", "clinic-b", "clinic-c", "clinic-d", "clinic-e"]
        assert summary["accuracy"] > 0.5  # two rounds of FedAvg on skewed shards, far above chance (0.1)

        # The final model is a registered ONNX version, with the job as its training run.
        with server.client() as c:
            versions = c.get(f"/models/{horizontal}").json()["items"]
            assert [v["ref"] for v in versions] == [f"{horizontal}:1"]
            meta = versions[0]["metadata"]
            assert meta["kind"] == "FederatedJob" and meta["rounds"] == 2
            assert meta["accuracy"] == pytest.approx(summary["accuracy"])
            up = c.get(f"/lineage/model/{horizontal}:1/upstream").json()["items"]
            assert {"kind": "training", "name": horizontal} in [{"kind": n["kind"], "name": n["name"]} for n in up]
        _check_registered_model(Path(versions[0]["uri"]), out / "model.npz")

        vdir = _job_dir(tmp_path, server, vertical)
        guest = json.loads((vdir / "guest.json").read_text())
        assert guest["test_auc"] > 0.95
        assert not (vdir / "pki").exists()  # certificates come from the control plane, not a shared directory
    finally:
        server.stop()
