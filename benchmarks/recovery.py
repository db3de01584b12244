"""Recovery time: from SIGKILL of one rank to the first training step completed after resume.

Ours: a 2-rank DDP job (gloo, CPU; ``examples/train_resumable.py``) runs through the scheduler,
the job controller and the local backend, with the reconcile loop in its background thread as the
platform runs it. One rank's training process is SIGKILLed mid-run; the controller sees the exit,
stops the gang, requeues it, the scheduler places it again and the backend relaunches it with a
fresh rendezvous; it resumes from the newest complete checkpoint. The clock stops when rank 0
prints its first step after ``resumed from`` (a DDP step: both ranks finished it).

Baseline, same run: a plain external relaunch by an ideal supervisor that knows of the failure at
once: kill the survivor, start both ranks again by hand on a new port, same script, same
checkpoints. It is the floor set by process start, imports, rendezvous and checkpoint load; the
ratio shows what detection and the control plane add on top.

    PYTHONPATH=src .venv/bin/python benchmarks/recovery.py [--runs 5]

Prints one JSON object (seconds); progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
SCRIPT = REPO / "examples" / "train_resumable.py"
SAVE_EVERY = 4
STEP_DELAY = 0.05
KILL_AFTER_STEP = 2 * SAVE_EVERY + 2
STEPS = 100_000  # never reached: each run is stopped once recovery is measured
POLL_S = 0.02


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def script_args(out: Path) -> list[str]:
    return [str(SCRIPT), "--steps", str(STEPS), "--save-every", str(SAVE_EVERY), "--step-delay", str(STEP_DELAY),
            "--out", str(out)]


TASK_ENV = {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "MODELPLANE_HEARTBEAT_INTERVAL_S": "0.5"}
STEP_LINE = re.compile(r"^rank 0 step (\d+) ", re.M)


def first_step_after_resume(text: str) -> int | None:
    """The first step rank 0 completed after it resumed, from its log; None until then."""
    at = text.find("rank 0 resumed from step")
    if at < 0:
        return None
    m = STEP_LINE.search(text, at)
    return int(m.group(1)) if m else None


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(POLL_S)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def last_step(text: str) -> int:
    steps = STEP_LINE.findall(text)
    return int(steps[-1]) if steps else 0


# -- ours: through the control plane -----------------------------------------------------------


def run_ours(tmp: Path, loop_interval: float, stop_grace: float) -> dict[str, float]:
    from modelplane.backends.local import LocalBackend, ProcessId
    from modelplane.control.base import ReconcileLoop
    from modelplane.control.jobs import JobController
    from modelplane.control.scheduling import SchedulerController
    from modelplane.core.node import NodeSpec
    from modelplane.core.queue import QueueSpec
    from modelplane.platform import make_scheduler
    from modelplane.store import Store

    store = Store(f"sqlite:///{tmp / 'modelplane.db'}")
    for name in ("n1", "n2"):
        store.upsert_node(NodeSpec.model_validate({
            "name": name, "cpu": "64", "memory": "512Gi", "accelerators": {"model": "NVIDIA-A100", "count": 8},
            "topology": {"group": "g0", "switch": "s0"}}))
    store.upsert_queue(QueueSpec.model_validate({"name": "training", "kind": "training", "quota": {"*": 1000}}))
    backend = LocalBackend(tmp / "backend")
    loop = ReconcileLoop([
        SchedulerController(store, make_scheduler("default"), time.time),
        JobController(store, backend, time.time, stop_grace_seconds=stop_grace, runtime_dir=tmp / "runtime",
                      checkpoint_root=str(tmp / "ckpt"), heartbeat_timeout=10.0),
    ], interval=loop_interval)
    store.create_job({
        "apiVersion": "modelplane/v1", "kind": "TrainingJob", "metadata": {"name": "bench"},
        "spec": {"queue": "training", "replicas": 2, "restartPolicy": {"maxRestarts": 3},
                 "template": {"command": [sys.executable, *script_args(tmp / "out.pt")], "env": TASK_ENV,
                              "resources": {"cpu": "1", "memory": "1Gi", "accelerators": 1}}}})
    loop.start()
    try:
        job = store.get_job("bench")
        wait_for(lambda: last_step(read(backend.log_path(job.id, 0))) >= KILL_AFTER_STEP, 120, "mid-run")
        row = next(t for t in store.list_tasks(job.id) if t.rank == 1)
        ident = ProcessId.parse(row.handle)
        assert ident is not None
        victim = int(Path(f"/proc/{ident.pid}/task/{ident.pid}/children").read_text().split()[0])
        t0 = time.time()
        os.kill(victim, signal.SIGKILL)
        log0 = backend.log_path(job.id, 0)
        wait_for(lambda: first_step_after_resume(read(log0)), 120, "the first step after resume")
        t1 = time.time()
        events = store.list_events(job.id)
        detected = next(e.time for e in events if e.to_state == "Recovering")
        relaunched = [e.time for e in events if e.to_state == "Running"][-1]
        return {"total_s": t1 - t0, "detect_s": detected - t0, "relaunch_s": relaunched - t0,
                "resumed_from": float(re.search(r"resumed from step (\d+)", read(log0)).group(1))}  # type: ignore[union-attr]
    finally:
        loop.stop()
        backend.stop(store.get_job("bench").id, 0)
        store.close()


# -- baseline: an ideal external supervisor ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch_pair(tmp: Path, attempt: int) -> list[tuple[subprocess.Popen[bytes], Path]]:
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = {**os.environ, **TASK_ENV, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "MODELPLANE_CHECKPOINT_URL": str(tmp / "ckpt"), "PYTHONUNBUFFERED": "1"}
        path = tmp / f"attempt{attempt}-rank{rank}.log"
        with open(path, "wb") as fh:
            procs.append((subprocess.Popen([sys.executable, *script_args(tmp / "out.pt")], env=env, stdout=fh,
                                           stderr=subprocess.STDOUT, start_new_session=True), path))
    return procs


def _kill_all(procs: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for proc, _ in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def run_baseline(tmp: Path) -> dict[str, float]:
    first = _launch_pair(tmp, 0)
    second: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        wait_for(lambda: last_step(read(first[0][1])) >= KILL_AFTER_STEP, 120, "mid-run")
        t0 = time.time()
        first[1][0].kill()
        _kill_all(first)
        second = _launch_pair(tmp, 1)
        wait_for(lambda: first_step_after_resume(read(second[0][1])), 120, "the first step after resume")
        return {"total_s": time.time() - t0}
    finally:
        _kill_all(first + second)


def summary(samples: list[float]) -> dict[str, Any]:
    return {"min": round(min(samples), 3), "median": round(statistics.median(samples), 3),
            "max": round(max(samples), 3), "samples": [round(s, 3) for s in samples]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--loop-interval", type=float, default=0.5, help="reconcile loop period (platform default 0.5 s)")
    ap.add_argument("--stop-grace", type=float, default=2.0, help="SIGTERM grace for the surviving ranks")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    ours: list[dict[str, float]] = []
    base: list[float] = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="mp-recovery-") as d:
            r = run_ours(Path(d), args.loop_interval, args.stop_grace)
        log(f"run {i + 1}/{args.runs} ours: {json.dumps({k: round(v, 3) for k, v in r.items()})}")
        ours.append(r)
        if not args.no_baseline:
            with tempfile.TemporaryDirectory(prefix="mp-recovery-base-") as d:
                b = run_baseline(Path(d))["total_s"]
            log(f"run {i + 1}/{args.runs} plain relaunch: {b:.3f} s")
            base.append(b)
    total = [r["total_s"] for r in ours]
    result: dict[str, Any] = {
        "benchmark": "recovery",
        "metric": "seconds from SIGKILL of one rank to the first training step completed after resume",
        "setup": {"ranks": 2, "backend": "local", "process_group": "gloo (CPU)", "script": "examples/train_resumable.py",
                  "save_every_steps": SAVE_EVERY, "reconcile_interval_s": args.loop_interval,
                  "stop_grace_s": args.stop_grace, "runs": args.runs, "cpus": os.cpu_count()},
        "ours": summary(total),
        "ours_detect_s": summary([r["detect_s"] for r in ours]),
        "ours_relaunched_s": summary([r["relaunch_s"] for r in ours]),
        "goal_median_s": 12.0,
        "meets_goal": statistics.median(total) < 12.0,
    }
    if base:
        result["baseline_plain_relaunch"] = summary(base)
        result["ratio_median_ours_over_baseline"] = round(statistics.median(total) / statistics.median(base), 3)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
