"""Job submissions per second through a real `modelplane up`, over HTTP, on SQLite and PostgreSQL.

50 concurrent clients (asyncio + httpx) each submit jobs as fast as the server acknowledges them.
Prints one JSON object: per database, submissions/s and p50/p99 latency, and PostgreSQL's
throughput as a ratio of SQLite's.

    .venv/bin/python benchmarks/api_submit.py [--clients 50] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from modelplane.testing.postgres import ThrowawayPostgres, free_port  # noqa: E402


def start_server(home: Path, database_url: str | None) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLANE_")}
    env.update(
        {
            "MODELPLANE_HOME": str(home),
            "PYTHONPATH": str(REPO / "src"),
            # The scheduler still runs; jobs ask for nothing the pool cannot place, as in real use.
            "MODELPLANE_RECONCILE_INTERVAL": "1.0",
        }
    )
    if database_url:
        env["MODELPLANE_DATABASE_URL"] = database_url
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelplane",
            "up",
            "--cluster",
            str(REPO / "examples" / "cluster.yaml"),
            "--port",
            str(port),
        ],
        cwd=home,
        env=env,
        stdout=open(home / "server.log", "wb"),  # noqa: SIM115 (the server process owns it)
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    token = yaml.safe_load((home / "credentials").read_text())["token"]
    return proc, url, token


def job(name: str) -> dict[str, object]:
    return {
        "apiVersion": "modelplane/v1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": {
            "queue": "batch",
            "template": {"command": ["true"], "resources": {"cpu": "100m", "memory": "64Mi"}},
            # Pinned to a node that is cordoned below: submissions are measured, not runs.
            "nodeSelector": {"kubernetes.io/hostname": "cpu-0"},
        },
    }


async def client_loop(
    c: httpx.AsyncClient, cid: int, until: float, lat: list[float], errors: list[str]
) -> None:
    i = 0
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        r = await c.post("/api/v1/jobs", json=job(f"c{cid}-{i}"))
        if r.status_code == 201:
            lat.append(time.perf_counter() - t0)
        else:
            errors.append(r.text[:200])
        i += 1


async def drive(url: str, token: str, clients: int, seconds: float) -> dict[str, float]:
    lat: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=60
    ) as c:
        await c.post("/api/v1/nodes/cpu-0/cordon")
        start = time.perf_counter()
        until = start + seconds
        await asyncio.gather(*(client_loop(c, k, until, lat, errors) for k in range(clients)))
        wall = time.perf_counter() - start
    lat.sort()
    if not lat:
        raise SystemExit(f"no submission succeeded; first error: {errors[:1]}")
    return {
        "submissions": len(lat),
        "errors": len(errors),
        "submissions_per_s": round(len(lat) / wall, 1),
        "p50_ms": round(statistics.median(lat) * 1000, 1),
        "p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000, 1),
    }


def run(database: str, clients: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        pg = ThrowawayPostgres().start() if database == "postgresql" else None
        proc, url, token = start_server(Path(tmp), pg.url if pg else None)
        try:
            return asyncio.run(drive(url, token, clients, seconds))
        except Exception:
            print((Path(tmp) / "server.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            proc.terminate()
            proc.wait(15)
            if pg:
                pg.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()
    results = {}
    for db in ("sqlite", "postgresql"):
        print(f"running {db} ...", file=sys.stderr)
        results[db] = run(db, args.clients, args.seconds)
    print(
        json.dumps(
            {
                "benchmark": "api_submit",
                "clients": args.clients,
                "seconds": args.seconds,
                "machine_cores": os.cpu_count(),
                "results": results,
                "postgresql_vs_sqlite_throughput": round(
                    results["postgresql"]["submissions_per_s"]
                    / max(results["sqlite"]["submissions_per_s"], 1e-9),
                    2,
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
