"""Rolling updates of a live InferenceDeployment: ``modelplane apply`` of a changed deployment replaces
its replicas one by one while requests keep flowing (none fails), and a new revision whose replicas
cannot start stops, leaving the old replicas serving."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from tests.integration.conftest import Server
from tests.integration.test_deployment_live import EXAMPLE, MODEL, _deployment, _wait, fast_server  # noqa: F401

pytestmark = pytest.mark.integration

BIAS = np.arange(10, dtype=np.float32) * 0.5  # what the second model answers for any input


def constant_model(path: Path) -> Path:
    """A second "version" of the digits model: same input and output, answers ``BIAS`` for every row,
    so a test can tell at a glance which version answered."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])
    w = numpy_helper.from_array(np.zeros((64, 10), dtype=np.float32), "w")
    b = numpy_helper.from_array(BIAS, "b")
    graph = helper.make_graph([helper.make_node("Gemm", ["input", "w", "b"], ["output"])], "constant", [x], [y],
                              initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


@dataclass
class Load:
    """Requests sent back to back from threads while a test changes the deployment; each answer is
    recorded as (status code, which model answered: "v1", "v2" or the error text)."""

    url: str
    token: str
    rows: list[list[float]]
    answers: list[tuple[int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {self.token}"}, timeout=60) as c:
            i = 0
            while not self.stop.is_set():
                r = c.post(self.url, json={"inputs": [self.rows[i % len(self.rows)]]})
                i += 1
                if r.status_code != 200:
                    self.answers.append((r.status_code, r.text[:300]))
                    continue
                out = np.asarray(r.json()["outputs"], dtype=np.float32)[0]
                self.answers.append((200, "v2" if np.allclose(out, BIAS) else "v1"))

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def count(self) -> int:
        return len(self.answers)


def _apply(server: Server, doc: dict[str, Any], path: Path) -> str:
    path.write_text(yaml.safe_dump(doc))
    r = server.cli("apply", "-f", str(path))
    assert r.returncode == 0, r.stderr
    return r.stdout


def _rows() -> list[list[float]]:
    return np.random.default_rng(0).random((8, 64), dtype=np.float32).tolist()


def _example(model: str, replicas: int) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"].pop("autoscaling")  # a fixed count: the rollout, not the autoscaler, changes replicas
    doc["spec"].pop("guards")  # tested with the live deployment; here only what replicas answer matters
    doc["spec"].update(model=model, replicas=replicas)
    return doc


@pytest.fixture
def server(fast_server: Server) -> Iterator[Server]:  # noqa: F811
    yield fast_server
    fast_server.cli("delete", "deployment", "digits")


def test_reapplying_after_a_promotion_rolls_out_the_new_version_without_failing_a_request(
        server: Server, tmp_path: Path):
    r = server.cli("models", "register", "digits", str(MODEL), "--stage", "production")
    assert r.returncode == 0, r.stderr
    manifest = tmp_path / "deployment.yaml"
    doc = _example("registry://digits@production", 2)
    assert "inferencedeployment/digits created" in _apply(server, doc, manifest)
    with server.client() as c:
        d = _wait(c, "digits", lambda d: d["ready"] == 2, 60, "replicas of revision 1 not ready")
        first = {r["name"] for r in d["status"]["replicas"]}
        assert d["revision"]["number"] == 1 and d["status"]["revision"]["modelRef"] == "digits:1"

        with Load(f"{server.url}/api/v1/deployments/digits/infer", server.token, _rows()) as load:
            _wait(c, "digits", lambda d: load.count() >= 10, 30, "no answers under load")
            r = server.cli("models", "register", "digits", str(constant_model(tmp_path / "v2.onnx")),
                           "--stage", "production")
            assert r.returncode == 0 and "digits:2" in r.stdout, r.stderr
            out = _apply(server, doc, manifest)  # the very same file: @production now names version 2
            assert "configured" in out and "rolling out revision 2" in out, out
            seen: list[int] = []  # ready replicas at each look: maxUnavailable 0 means never under 2

            def finished(d: dict[str, Any]) -> bool:
                seen.append(d["ready"])
                return (d["status"]["rollout"] is None and d["status"]["revision"]["number"] == 2
                        and d["ready"] == 2 and all(r["revision"] == 2 for r in d["status"]["replicas"]))

            d = _wait(c, "digits", finished, 90, "the rollout did not finish")
            done = load.count()
            _wait(c, "digits", lambda d: load.count() >= done + 20, 30, "no answers after the rollout")

    codes = [code for code, _ in load.answers]
    assert set(codes) == {200}, [a for a in load.answers if a[0] != 200][:5]
    models = [m for _, m in load.answers]
    assert models[0] == "v1" and models[-10:] == ["v2"] * 10, models
    assert min(seen) >= 2 and max(seen) <= 3, seen  # new replicas were ready before old ones left (surge 1)
    new = {r["name"] for r in d["status"]["replicas"]}
    assert not new & first, (first, new)  # every replica was replaced
    reasons = [e["reason"] for e in d["status"]["events"]]
    assert reasons.index("RolloutStarted") < reasons.index("Draining") < reasons.index("RolloutComplete")
    assert reasons.count("Draining") == 2

    assert "unchanged" in _apply(server, doc, manifest)
    r = server.cli("get", "deployments")
    line = next(ln for ln in r.stdout.splitlines() if ln.split()[:1] == ["digits"])
    assert line.split()[2] == "2" and "2/2" in line, r.stdout
    r = server.cli("describe", "deployment", "digits")
    assert "revision 2 (" in r.stdout and "digits:2" in r.stdout and "RolloutComplete" in r.stdout, r.stdout

    # A change of strategy (or replicas, autoscaling, guards) applies in place: same revision, same replicas.
    doc["spec"]["strategy"] = {"maxSurge": 2, "maxUnavailable": "50%"}
    assert "revision 2 updated in place" in _apply(server, doc, manifest)
    with server.client() as c:
        time.sleep(1.0)
        d = _deployment(c, "digits")
        assert {r["name"] for r in d["status"]["replicas"]} == new and d["revision"]["number"] == 2
        assert d["manifest"]["spec"]["strategy"] == doc["spec"]["strategy"]


def test_a_revision_that_cannot_start_stops_its_rollout_and_the_old_replicas_keep_serving(
        server: Server, tmp_path: Path):
    manifest = tmp_path / "deployment.yaml"
    good = _example(str(MODEL), 1)
    _apply(server, good, manifest)
    with server.client() as c:
        d = _wait(c, "digits", lambda d: d["ready"] == 1, 60, "the replica of revision 1 is not ready")
        (serving,) = d["status"]["replicas"]
        broken = tmp_path / "broken.onnx"
        broken.write_bytes(b"this is not an ONNX model")
        bad = _example(str(broken), 1)
        with Load(f"{server.url}/api/v1/deployments/digits/infer", server.token, _rows()) as load:
            assert "rolling out revision 2" in _apply(server, bad, manifest)
            d = _wait(c, "digits", lambda d: (d["status"]["rollout"] or {}).get("phase") == "Failed", 90,
                      "the rollout of a model that does not load did not stop")
            count = load.count()
            _wait(c, "digits", lambda d: load.count() >= count + 10, 30, "no answers after the rollout stopped")
        assert set(load.answers) == {(200, "v1")}, [a for a in load.answers if a != (200, "v1")][:5]
        assert d["status"]["revision"]["number"] == 1 and d["revision"]["rollout"]["number"] == 2
        failed = next(e for e in d["status"]["events"] if e["reason"] == "RolloutFailed")
        assert "replicas failed" in failed["message"] and "revision 1 keeps serving" in failed["message"]
        d = _wait(c, "digits", lambda d: [r["name"] for r in d["status"]["replicas"]] == [serving["name"]], 30,
                  "the failed revision's replicas were not removed")
        assert d["ready"] == 1 and d["status"]["replicas"][0]["revision"] == 1
        r = server.cli("get", "deployments")
        assert "1 (2 failed)" in r.stdout, r.stdout
        r = server.cli("describe", "deployment", "digits")
        assert "rollout to revision 2" in r.stdout and "Failed" in r.stdout and "RolloutFailed" in r.stdout

        # Rolling back is applying the previous manifest: revision 3, and nothing restarts.
        assert "revision 3 updated in place" in _apply(server, good, manifest)
        d = _wait(c, "digits", lambda d: d["status"]["rollout"] is None and d["status"]["revision"]["number"] == 3,
                  30, "the rollback was not taken")
        assert [r["name"] for r in d["status"]["replicas"]] == [serving["name"]] and d["ready"] == 1
        assert d["status"]["events"][-1]["reason"] == "RolledBack"
