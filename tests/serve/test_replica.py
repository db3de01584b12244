from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelplane.serve.batching import BatchingConfig
from modelplane.serve.launch import start_replica
from modelplane.serve.runtime import OnnxModel


@pytest.fixture(scope="module")
def replica(mlp_onnx) -> Iterator[str]:
    proc, url = start_replica("mlp", mlp_onnx[2], batching=BatchingConfig(8, 0.005, 64))
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_health_ready_and_metadata(replica: str) -> None:
    assert httpx.get(f"{replica}/v2/health/live").status_code == 200
    assert httpx.get(f"{replica}/v2/health/ready").json() == {"ready": True, "draining": False}
    meta = httpx.get(f"{replica}/v2/models/mlp").json()
    assert meta["input"]["row_shape"] == [8]
    assert meta["input"]["dtype"] == "float32"


def test_infer_over_http_matches_onnxruntime(replica: str, mlp_onnx) -> None:
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    r = httpx.post(f"{replica}/v2/models/mlp/infer", json={"inputs": x.tolist()})
    assert r.status_code == 200
    np.testing.assert_allclose(
        np.array(r.json()["outputs"]), OnnxModel(mlp_onnx[1]).run(x), rtol=1e-5, atol=1e-6
    )
    metrics = httpx.get(f"{replica}/metrics").text
    assert 'nv_inference_count_total{model="mlp"}' in metrics
    assert "nv_inference_queue_duration_us_bucket" in metrics


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not JSON"),
        (b'{"rows": []}', "no 'inputs'"),
        (b'{"inputs": [[1, 2, 3]]}', "expected [batch, 8] of float32"),
        (b'{"inputs": [["a", "b"]]}', "cannot be read as float32"),
        (b'{"inputs": []}', "expected [batch, 8] of float32"),
    ],
)
def test_bad_input_is_400_naming_shape_and_dtype(replica: str, body: bytes, needle: str) -> None:
    r = httpx.post(f"{replica}/v2/models/mlp/infer", content=body)
    assert r.status_code == 400
    assert needle in r.json()["message"]
    assert r.json()["hint"]


def test_unknown_model_is_404(replica: str) -> None:
    assert httpx.post(f"{replica}/v2/models/other/infer", json={"inputs": [[0.0] * 8]}).status_code == 404


def test_sigterm_drains_in_flight_requests(mlp_onnx) -> None:
    # A long queue delay keeps the request in flight while SIGTERM arrives.
    proc, url = start_replica("mlp", mlp_onnx[2], batching=BatchingConfig(64, 1.5, 128))
    x = [[0.5] * 8]
    result: dict[str, httpx.Response] = {}
    t = threading.Thread(
        target=lambda: result.setdefault(
            "r", httpx.post(f"{url}/v2/models/mlp/infer", json={"inputs": x}, timeout=30)
        )
    )
    t.start()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    t.join(timeout=30)
    # uvicorn re-raises the captured SIGTERM after a clean shutdown, so the exit status says SIGTERM.
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert result["r"].status_code == 200
    np.testing.assert_allclose(
        result["r"].json()["outputs"], OnnxModel(mlp_onnx[1]).run(np.array(x, np.float32)), rtol=1e-5
    )
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v2/health/live", timeout=1)


def _through_gateway(url: str, rows: list[list[float]]) -> httpx.Response:
    """One request through a real gateway whose only replica is ``url``."""
    import asyncio

    from modelplane.serve.gateway import DeploymentConfig, Gateway, create_gateway_app

    async def go() -> httpx.Response:
        gw = Gateway()
        gw.add_deployment(DeploymentConfig("mlp-dep", "mlp"), [url])
        transport = httpx.ASGITransport(app=create_gateway_app(gw))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            r = await c.post("/v1/deployments/mlp-dep/infer", json={"inputs": rows})
        await gw.aclose()
        return r

    return asyncio.run(go())


def test_port_zero_replica_reports_the_port_it_listens_on_and_the_gateway_reaches_it(
    mlp_onnx, tmp_path: Path
) -> None:
    """As a backend whose tasks pick their own ports starts one: MODELPLANE_PORT=0 and an address file."""
    import os
    import socket
    import subprocess
    import sys

    from modelplane.backends.base import ADDRESS_FILE_ENV
    from modelplane.serve.launch import wait_reported

    src = str(Path(__file__).resolve().parents[2] / "src")
    address_file = tmp_path / "address.json"
    env = {**os.environ, "PYTHONPATH": src, "MODELPLANE_PORT": "0", ADDRESS_FILE_ENV: str(address_file)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelplane.serve.replica",
            "--model-name",
            "mlp",
            "--model-path",
            mlp_onnx[2],
        ],
        env=env,
    )
    try:
        port = wait_reported(address_file, 60, proc)
        assert port != 0
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # something accepts connections on the reported port ...
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/v2/health/ready").json() == {
            "ready": True,
            "draining": False,
        }  # ... the replica
        x = np.random.default_rng(7).standard_normal((2, 8)).astype(np.float32)
        r = _through_gateway(url, x.tolist())
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(
            np.array(r.json()["outputs"]), OnnxModel(mlp_onnx[1]).run(x), rtol=1e-5, atol=1e-6
        )
        assert json.loads(address_file.read_text()) == {"host": "127.0.0.1", "port": port}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_port_out_of_range_is_refused_before_the_model_loads(mlp_onnx) -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelplane.serve.replica",
            "--model-name",
            "mlp",
            "--model-path",
            mlp_onnx[2],
            "--port",
            "70000",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "out of range" in r.stderr
