"""Dynamic batching on vs off for one CPU replica of a 23M-parameter MLP on onnxruntime.

Part 1 (raw): onnxruntime rows/s at batch 1, 4, 16, 64 (the ANCHORS "here" figures: 3.6x at 4,
7.4x at 16, 11x at 64 for a 25M MLP).
Part 2 (served): the real replica (uvicorn + dynamic batcher) under the same closed-loop load,
``--clients`` concurrent clients each sending one row at a time, batching off (max batch 1, no
delay) vs on (max batch 32, 5 ms delay), alternating for ``--rounds`` rounds (medians reported). Reports throughput, p50 and p95 latency, and whether p95
meets the stated SLO (``--slo-ms``). One onnxruntime thread per replica.
Part 3 (equal offered load): Poisson arrivals at 80% of the batching-off closed-loop throughput,
sent to each configuration in turn; p50/p95 latency side by side.

    PYTHONPATH=src .venv/bin/python benchmarks/batching.py [--clients 32 --seconds 6 --rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from modelplane.serve.batching import BatchingConfig
from modelplane.serve.launch import start_replica
from modelplane.serve.runtime import OnnxModel

IN, HIDDEN, OUT = 512, 4096, 10


def build_model(path: Path) -> int:
    import torch

    from modelplane.serve.export import export_torch

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(IN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, OUT),
    )
    report = export_torch(mlp, torch.zeros(1, IN), rtol=1e-3, atol=1e-4)
    path.write_bytes(report.onnx_bytes)
    return sum(p.numel() for p in mlp.parameters())


def raw_throughput(path: Path, seconds: float) -> dict[str, float]:
    model = OnnxModel(str(path), intra_op_threads=1)
    out = {}
    for b in (1, 4, 16, 64):
        x = np.random.default_rng(b).standard_normal((b, IN)).astype(np.float32)
        model.run(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model.run(x)
            n += b
        out[str(b)] = n / (time.perf_counter() - t0)
        print(f"raw batch {b}: {out[str(b)]:.0f} rows/s", file=sys.stderr)
    return out


async def closed_loop(url: str, clients: int, seconds: float, warmup: float) -> dict[str, float]:
    import aiohttp

    body = json.dumps({"inputs": np.random.default_rng(0).standard_normal((1, IN)).astype(np.float32).round(4).tolist()})
    lat: list[float] = []
    errors = 0
    t_start = time.perf_counter()
    t_measure = t_start + warmup
    t_end = t_measure + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                return
            async with session.post(f"{url}/v2/models/mlp/infer", data=body, headers={"content-type": "application/json"}) as r:
                await r.read()
                ok = r.status == 200
            t1 = time.perf_counter()
            if t0 >= t_measure:
                if ok:
                    lat.append(t1 - t0)
                else:
                    errors += 1

    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    lat.sort()
    return {
        "throughput_rps": len(lat) / seconds,
        "p50_ms": lat[len(lat) // 2] * 1e3 if lat else float("nan"),
        "p95_ms": lat[int(len(lat) * 0.95)] * 1e3 if lat else float("nan"),
        "requests": len(lat),
        "errors": errors,
    }


async def open_loop(url: str, rate: float, seconds: float, seed: int = 0) -> dict[str, float]:
    """Poisson arrivals at ``rate`` per second: the same offered load for batching on and off."""
    import aiohttp

    body = json.dumps({"inputs": np.random.default_rng(0).standard_normal((1, IN)).astype(np.float32).round(4).tolist()})
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=int(rate * seconds * 1.5) + 10)
    lat: list[float] = []
    errors = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        async with session.post(f"{url}/v2/models/mlp/infer", data=body, headers={"content-type": "application/json"}) as r:
            await r.read()
            if r.status == 200:
                lat.append(time.perf_counter() - t0)
            else:
                errors += 1

    tasks = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        t_start = time.perf_counter()
        t_next = t_start
        for g in gaps:
            t_next += g
            if t_next - t_start > seconds:
                break
            await asyncio.sleep(max(0.0, t_next - time.perf_counter()))
            tasks.append(asyncio.ensure_future(one(session)))
        await asyncio.gather(*tasks)
    lat.sort()
    return {
        "offered_rps": rate,
        "completed_rps": len(lat) / seconds,
        "p50_ms": lat[len(lat) // 2] * 1e3 if lat else float("nan"),
        "p95_ms": lat[int(len(lat) * 0.95)] * 1e3 if lat else float("nan"),
        "requests": len(lat),
        "errors": errors,
    }


def served(path: Path, cfg: BatchingConfig, clients: int, seconds: float, rate: float | None = None) -> dict[str, float]:
    proc, url = start_replica("mlp", str(path), batching=cfg, threads=1)
    try:
        if rate is None:
            res = asyncio.run(closed_loop(url, clients, seconds, warmup=1.0))
        else:
            asyncio.run(closed_loop(url, 4, 0.5, warmup=0.5))  # warm the model up
            res = asyncio.run(open_loop(url, rate, seconds))
        import httpx

        m = httpx.get(f"{url}/metrics").text
        count = _metric(m, "nv_inference_count_total")
        execs = _metric(m, "nv_inference_exec_count_total")
        res["mean_batch_size"] = count / execs if execs else float("nan")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"served max_batch={cfg.max_batch_size}: {res}", file=sys.stderr)
    return res


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--raw-seconds", type=float, default=2.0)
    ap.add_argument("--slo-ms", type=float, default=250.0, help="p95 latency SLO for the served test")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--delay-ms", type=float, default=5.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mlp.onnx"
        params = build_model(path)
        raw = raw_throughput(path, a.raw_seconds)
        off_cfg = BatchingConfig(1, 0.0, 4096)
        on_cfg = BatchingConfig(a.max_batch, a.delay_ms / 1000.0, 4096)
        rounds: list[dict[str, dict[str, float]]] = []
        # Off and on alternate for several rounds so load drift on a shared machine hits both alike.
        for rnd in range(a.rounds):
            off = served(path, off_cfg, a.clients, a.seconds)
            on = served(path, on_cfg, a.clients, a.seconds)
            # Equal offered load: 80% of what batching-off sustained closed-loop in this round.
            rate = round(0.8 * off["throughput_rps"], 1)
            off_open = served(path, off_cfg, a.clients, a.seconds, rate=rate)
            on_open = served(path, on_cfg, a.clients, a.seconds, rate=rate)
            rounds.append({"off": off, "on": on, "off_open": off_open, "on_open": on_open})
            print(f"round {rnd}: throughput ratio {on['throughput_rps'] / off['throughput_rps']:.2f}", file=sys.stderr)
    r = {k: round(v, 3) for k, v in raw.items()}

    def med(key: str, field: str) -> float:
        return round(float(np.median([x[key][field] for x in rounds])), 3)

    ratios = [round(x["on"]["throughput_rps"] / x["off"]["throughput_rps"], 2) for x in rounds]
    summary = {k: {f: med(k, f) for f in rounds[0][k]} for k in ("off", "on", "off_open", "on_open")}
    result = {
        "benchmark": "batching",
        "model": {"parameters": params, "layers": [IN, HIDDEN, HIDDEN, 1024, OUT], "onnxruntime_threads": 1},
        "raw_rows_per_s": r,
        "raw_speedup_vs_batch1": {k: round(v / raw["1"], 2) for k, v in raw.items()},
        "served_closed_loop_median_of_rounds": {
            "clients": a.clients, "seconds_per_round": a.seconds, "rounds": a.rounds, "slo_p95_ms": a.slo_ms,
            "batching_off": summary["off"],
            f"batching_on_max{a.max_batch}_delay{a.delay_ms:g}ms": summary["on"],
            "throughput_ratio_on_vs_off_per_round": ratios,
            "throughput_ratio_on_vs_off_median": float(np.median(ratios)),
            "p95_within_slo": {"off": summary["off"]["p95_ms"] <= a.slo_ms, "on": summary["on"]["p95_ms"] <= a.slo_ms},
        },
        "equal_offered_load_open_loop_median_of_rounds": {
            "offered_rps_per_round": [x["off_open"]["offered_rps"] for x in rounds], "slo_p95_ms": a.slo_ms,
            "batching_off": summary["off_open"], "batching_on": summary["on_open"],
            "p95_within_slo": {"off": summary["off_open"]["p95_ms"] <= a.slo_ms, "on": summary["on_open"]["p95_ms"] <= a.slo_ms},
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
