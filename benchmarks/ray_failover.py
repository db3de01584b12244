"""Failover on Ray: time from killing a Ray node under a running 2-rank job to all ranks running
again elsewhere, and to the first training step after the resume, against the seed's 2-minute
recovery requirement (and the issue's 30 s goal), side by side as ratios.

A real multi-node Ray cluster runs on this machine (``backends.ray_local_cluster``: one head, one
spare worker, and one fresh worker per run that gets killed). The whole control loop runs as in
``modelplane up``: scheduler, job controller, node health fed by Ray's inventory (a node Ray lost
stops heartbeating and goes NotReady after 2 s), with the Ray GCS declaring a node dead after
~3 missed 1 s health checks. The job is a stand-in trainer: it checkpoints its step to a file
every 0.1 s step, resumes from it, and logs each step with a wall-clock time.

    PYTHONPATH=src .venv/bin/python benchmarks/ray_failover.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

REQUIREMENT_S = 120.0  # seed: recovery under 2 minutes
GOAL_MEDIAN_S = 30.0  # issue 6

TRAINER = """
import os, pathlib, time
marks = pathlib.Path({marks!r})
rank = os.environ['RANK']
ckpt = marks / f'{{rank}}.ckpt'
log = marks / f'{{rank}}.log'
step = int(ckpt.read_text()) if ckpt.exists() else 0
with open(log, 'a') as fh:
    fh.write(f'start {{time.time()}} {{os.environ["MODELPLANE_NODE"]}}\\n')
while step < {steps}:
    time.sleep(0.1)
    step += 1
    tmp = ckpt.with_suffix('.tmp')
    tmp.write_text(str(step))
    os.replace(tmp, ckpt)  # atomic: a node killed mid-write leaves the previous checkpoint
    with open(log, 'a') as fh:
        fh.write(f'step {{step}} {{time.time()}}\\n')
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def one_run(cluster: Any, index: int, work: Path, steps: int) -> dict[str, float]:
    from modelplane.backends.base import create_backend
    from modelplane.control.base import ReconcileLoop
    from modelplane.control.jobs import JobController
    from modelplane.control.nodes import EmbeddedNodeAgent, NodeHealthController
    from modelplane.control.scheduling import SchedulerController
    from modelplane.core.job import JobState
    from modelplane.core.queue import QueueSpec
    from modelplane.platform import make_scheduler
    from modelplane.store import Store

    cluster.add_worker({f"k{index}": 1}, {"modelplane.io/node-name": f"node-k{index}"})
    run_dir = work / f"run{index}"
    marks = run_dir / "marks"
    marks.mkdir(parents=True)
    backend = create_backend("ray", address=cluster.address, state_dir=run_dir / "backend")
    store = Store(f"sqlite:///{run_dir / 'modelplane.db'}")
    try:
        for spec in backend.import_nodes():  # type: ignore[attr-defined]
            store.upsert_node(spec)
        store.upsert_queue(QueueSpec.model_validate({"name": "training", "kind": "training", "quota": {"*": 1000}}))
        loop = ReconcileLoop([
            SchedulerController(store, make_scheduler("default"), time.time),
            JobController(store, backend, time.time, stop_grace_seconds=1),
            NodeHealthController(store, time.time, timeout_seconds=2),
            EmbeddedNodeAgent(store, backend.alive_node_names),  # type: ignore[attr-defined]
        ])
        # Keep the job off the head (killing it would end the cluster). Two workers are alive in each
        # run (this run's new one and the survivor of the last), so the job always has somewhere to go.
        store.create_job({
            "apiVersion": "modelplane/v1", "kind": "TrainingJob", "metadata": {"name": "trainer"},
            "spec": {"queue": "training", "replicas": 2, "restartPolicy": {"maxRestarts": 3},
                     "template": {"command": ["python", "-c", TRAINER.format(marks=str(marks), steps=steps)],
                                  "resources": {"cpu": "100m", "memory": "64Mi"}},
                     "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                         "nodeSelectorTerms": [{"matchExpressions": [
                             {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["node-a"]}]}]}}}}})

        def until(pred: Any, what: str, timeout: float = 180.0) -> Any:
            deadline = time.monotonic() + timeout
            while True:
                loop.run_once()
                job = store.get_job("trainer")
                if pred(job):
                    return job
                if time.monotonic() > deadline:
                    raise SystemExit(f"run {index}: timed out waiting for {what} ({job.state} {job.message})")
                time.sleep(0.05)

        def stepped(rank: str, n: int) -> bool:
            path = marks / f"{rank}.log"
            return path.exists() and sum(1 for line in path.read_text().splitlines() if line.startswith("step")) >= n

        until(lambda j: j.state is JobState.RUNNING and stepped("0", 5) and stepped("1", 5), "training")
        job = store.get_job("trainer")
        assert job.placement is not None
        name = job.placement.assignments[0].node  # the node under rank 0 dies
        victim = cluster.node_named(name)
        killed_at = time.time()
        victim.kill()
        job = until(lambda j: j.state is JobState.RUNNING and name not in {a.node for a in j.placement.assignments},
                    "running again elsewhere")
        running_again = time.time() - killed_at
        job = until(lambda j: j.state in (JobState.SUCCEEDED, JobState.FAILED), "the end")
        if job.state is not JobState.SUCCEEDED:
            raise SystemExit(f"run {index}: job ended {job.state}: {job.message}")
        first_steps = []
        for rank in ("0", "1"):
            lines = (marks / f"{rank}.log").read_text().splitlines()
            restart = max(i for i, line in enumerate(lines) if line.startswith("start"))
            first = next(line for line in lines[restart:] if line.startswith("step"))
            first_steps.append(float(first.split()[2]))
        return {"kill_to_running_s": running_again, "kill_to_first_step_s": max(first_steps) - killed_at}
    finally:
        store.close()


def summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2),
            "max": round(max(values), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60, help="training steps of 0.1 s per job")
    args = parser.parse_args()
    from modelplane.backends.ray_local_cluster import LocalRayCluster, ray_command

    work = Path(tempfile.mkdtemp(prefix="mp-failover-"))
    cluster = LocalRayCluster(ray_command(), state_dir=str(work))
    results = []
    try:
        log("starting the Ray head and a spare worker")
        cluster.start_head({"node_a": 1}, {"modelplane.io/node-name": "node-a"})
        cluster.connect()
        cluster.add_worker({"spare": 1}, {"modelplane.io/node-name": "node-spare"})
        for i in range(args.runs):
            results.append(one_run(cluster, i, work, args.steps))
            log(f"run {i}: {results[-1]}")
    finally:
        cluster.teardown()
        shutil.rmtree(work, ignore_errors=True)
    running = [r["kill_to_running_s"] for r in results]
    stepping = [r["kill_to_first_step_s"] for r in results]
    print(json.dumps({
        "benchmark": "ray_failover", "runs": args.runs, "alive_ray_nodes_per_run": 3,
        "detection": {"ray_health_check_period_ms": 1000, "ray_failure_threshold": 3, "node_heartbeat_timeout_s": 2},
        "kill_to_all_ranks_running_s": summary(running),
        "kill_to_first_step_after_resume_s": summary(stepping),
        "requirement_s": REQUIREMENT_S, "goal_median_s": GOAL_MEDIAN_S,
        "ratio_median_first_step_to_requirement": round(statistics.median(stepping) / REQUIREMENT_S, 3),
        "ratio_median_first_step_to_goal": round(statistics.median(stepping) / GOAL_MEDIAN_S, 3),
    }))


if __name__ == "__main__":
    main()
