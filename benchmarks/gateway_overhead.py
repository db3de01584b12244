"""Latency the gateway adds over calling a replica directly, with guards off and on.

One replica (small MLP, batching off so nothing waits for a batch) and one gateway process; a
single client sends requests one after another (keep-alive) directly, through the gateway without
guards, and through a gateway with the injection filter (input) and the Presidio PII monitor
(output). The body carries a short prompt so the input guard has text to read. Added latency =
gateway percentile - direct percentile. Latency percentiles move with machine load (the load
average is in the output); the CPU each server process spends per request does not, so it is
reported too. One JSON object on stdout.

    PYTHONPATH=src .venv/bin/python benchmarks/gateway_overhead.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from modelplane.serve.batching import BatchingConfig
from modelplane.serve.launch import free_port, start_replica


def build_model(path: Path) -> None:
    import torch

    from modelplane.serve.export import export_torch

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 8))
    path.write_bytes(export_torch(mlp, torch.zeros(1, 64)).onnx_bytes)


def start_gateway(replica: str, guards: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    cmd = [sys.executable, "-m", "modelplane.serve.gateway", "--deployment", "mlp", "--model", "mlp",
           "--replica", replica, "--port", str(port)] + (["--guards"] if guards else [])
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("gateway did not start")


def measure(url: str, body: dict[str, object], n: int) -> list[float]:
    out = []
    with httpx.Client(timeout=30) as c:
        for i in range(n + 50):
            t0 = time.perf_counter()
            r = c.post(url, json=body)
            dt = time.perf_counter() - t0
            if r.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {r.status_code} {r.text[:200]}")
            if i >= 50:  # warm-up
                out.append(dt)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc): per-request cost that machine load does not inflate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(xs, p)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    a = ap.parse_args()
    body = {"inputs": np.random.default_rng(0).standard_normal((1, 64)).round(4).tolist(),
            "prompt": "Summarise the attached sensor readings for the weekly report, please."}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mlp.onnx"
        build_model(path)
        rep, rurl = start_replica("mlp", str(path), batching=BatchingConfig(1, 0.0, 1024))
        procs = [rep]
        try:
            g_off, url_off = start_gateway(rurl, guards=False)
            procs.append(g_off)
            g_on, url_on = start_gateway(rurl, guards=True)
            procs.append(g_on)
            res = {}
            # Interleave rounds so machine load drifts hit every path alike.
            lat: dict[str, list[float]] = {"direct": [], "gateway_guards_off": [], "gateway_guards_on": []}
            urls = {"direct": f"{rurl}/v2/models/mlp/infer", "gateway_guards_off": f"{url_off}/v1/deployments/mlp/infer",
                    "gateway_guards_on": f"{url_on}/v1/deployments/mlp/infer"}
            pids = {"direct": rep.pid, "gateway_guards_off": g_off.pid, "gateway_guards_on": g_on.pid}
            cpu = dict.fromkeys(urls, 0.0)
            load_before = os.getloadavg()
            for rnd in range(5):
                for k, u in urls.items():
                    c0 = cpu_seconds(pids[k])
                    lat[k] += measure(u, body, a.requests // 5)
                    cpu[k] += cpu_seconds(pids[k]) - c0
                print(f"round {rnd} done", file=sys.stderr)
            load_after = os.getloadavg()
            for k, xs in lat.items():
                res[k] = {"p50_ms": round(pct(xs, 50), 3), "p99_ms": round(pct(xs, 99), 3), "n": len(xs),
                          # CPU of the process answering (replica for direct, gateway otherwise), warm-up included
                          "server_cpu_ms_per_request": round(cpu[k] / (len(xs) + 5 * 50) * 1e3, 3)}
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=30)
    added = {k: {"p50_ms": round(res[k]["p50_ms"] - res["direct"]["p50_ms"], 3),
                 "p99_ms": round(res[k]["p99_ms"] - res["direct"]["p99_ms"], 3)}
             for k in ("gateway_guards_off", "gateway_guards_on")}
    print(json.dumps({"benchmark": "gateway_overhead", "latency": res, "added_by_gateway": added,
                      "load_average_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
                      "goal_ms": {"guards_off_p99": 2.0, "guards_on_p99": 10.0}}, indent=1))


if __name__ == "__main__":
    main()
