"""Placements per second of the live scheduler code, against FirstFitScheduler, at N nodes x 8 devices.

A synthetic pool of mixed vendors (NVIDIA A100/H100/V100, AMD MI250, Ascend 910B), grouped 32
nodes per switch and 8 switches per group, some nodes tainted or labelled by zone; a job stream of
single-device, multi-device, fractional (milli-GPU), affinity-constrained, model-constrained, CPU-only
and gang (2-32 ranks) jobs; four queues with quota in one cohort (so admission and borrowing run).
Round 1 places a stream worth 50% of the devices on the empty pool; round 2 places another 35% on
top of it (the pool busy and fragmented, as a live round finds it). A placement is one task (pod)
put on a node, as kube-scheduler counts pods/s; a round's time includes building its indexes.
Rates are per wall-clock second; ``placements_per_cpu_s`` divides by this process's CPU time
instead, which a machine shared with other work does not inflate.

The baseline (first fit) scans every node for every task, so it runs on a prefix of round 2's
stream, and ours is timed on the very same input for the ratio.

    PYTHONPATH=src python benchmarks/scheduler_throughput.py            # N = 1000, 5000, 10000
    PYTHONPATH=src python benchmarks/scheduler_throughput.py --nodes 5000

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from types import MappingProxyType
from typing import Any

from modelplane.core.affinity import NodeAffinity, Taint, TaintEffect, Toleration
from modelplane.core.node import Node, NodeSpec
from modelplane.core.queue import QueueSpec
from modelplane.core.workload import PodSet, TaskRequest, Workload
from modelplane.scheduler.first_fit import FirstFitScheduler
from modelplane.scheduler.interface import RunningWorkload, Scheduler, SchedulingInput
from modelplane.scheduler.registry import create_scheduler

MODELS = [
    ("NVIDIA-A100", 0.35),
    ("NVIDIA-H100", 0.2),
    ("V100M32", 0.1),
    ("AMD-MI250", 0.2),
    ("Ascend-910B", 0.15),
]
ZONES = ("a", "b", "c")
SPOT_TAINT = Taint(key="modelplane.io/spot", value="true", effect=TaintEffect.NO_SCHEDULE)


def make_pool(n: int, rng: random.Random) -> list[Node]:
    nodes = []
    models = [m for m, _ in MODELS]
    weights = [w for _, w in MODELS]
    switch_model: dict[int, str] = {}
    for i in range(n):
        switch = i // 32
        # One model per switch, as real pools are built (a rack of one SKU).
        model = switch_model.setdefault(switch, rng.choices(models, weights)[0])
        spot = rng.random() < 0.1
        spec: dict[str, Any] = {
            "name": f"node-{i:05d}",
            "cpu": 128,
            "memory": "1024Gi",
            "accelerators": {"model": model, "count": 8},
            "labels": {"zone": ZONES[switch % 3], "pool": "spot" if spot else "on-demand"},
            "taints": [SPOT_TAINT.model_dump()] if spot else [],
            "topology": {"group": f"g{switch // 8}", "switch": f"s{switch}"},
        }
        nodes.append(Node.from_spec(NodeSpec.model_validate(spec)))
    return nodes


def make_jobs(n_nodes: int, rng: random.Random, fill: float, prefix: str) -> list[Workload]:
    capacity = n_nodes * 8 * 1000
    target = int(capacity * fill)
    queues = ["research", "prod", "batch", "infer"]
    zone_affinity = NodeAffinity.model_validate(
        {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                }
            ],
        }
    )
    tolerate_spot = (Toleration(key="modelplane.io/spot", operator="Exists"),)
    jobs: list[Workload] = []
    total = 0
    i = 0
    while total < target:
        r = rng.random()
        count, gang, spread = 1, True, False
        affinity = None
        tolerations: tuple[Toleration, ...] = ()
        selector: dict[str, str] = {}
        if r < 0.30:  # one task, whole devices, any model
            req = TaskRequest(4000, 16384, rng.choice((1, 1, 2, 4, 8)), 1000)
        elif r < 0.45:  # fractional share of one device
            req = TaskRequest(2000, 8192, 1, rng.choice((250, 300, 500, 700)))
        elif r < 0.60:  # required + preferred node affinity
            req = TaskRequest(4000, 16384, rng.choice((1, 2, 4)), 1000)
            affinity = zone_affinity
        elif r < 0.70:  # accelerator model list, tolerates spot
            req = TaskRequest(
                4000, 16384, rng.choice((1, 2, 4, 8)), 1000, gpu_models=("V100M32", "NVIDIA-A100")
            )
            tolerations = tolerate_spot
        elif r < 0.75:  # CPU only
            req = TaskRequest(8000, 32768)
        elif r < 0.80:  # inference replicas, spread
            req = TaskRequest(4000, 16384, 1, 1000)
            count, gang, spread = rng.choice((2, 3, 4)), False, True
            selector = {"pool": "on-demand"}
        else:  # gang of 2-32 ranks
            count = rng.choice((2, 4, 8, 16, 32))
            req = TaskRequest(16000, 65536, rng.choice((4, 8)), 1000)
        ps = PodSet(
            "worker",
            count,
            req,
            affinity=affinity,
            tolerations=tolerations,
            node_selector=MappingProxyType(selector),
        )
        w = Workload(
            job_id=f"{prefix}-{i:06d}",
            name=f"{prefix}-{i}",
            queue=queues[i % 4],
            kind="TrainingJob",
            pod_sets=(ps,),
            priority=rng.choice((100, 200, 300)),
            gang=gang,
            spread=spread,
            created_at=float(i),
            estimated_duration_s=rng.choice((600.0, 3600.0, None)),
        )
        jobs.append(w)
        total += w.total_gpu_milli
        i += 1
    return jobs


def queues_for(n_nodes: int) -> dict[str, QueueSpec]:
    share = n_nodes * 8 * 0.3  # four queues at 30% each: a cohort that lends and borrows
    return {
        q: QueueSpec.model_validate({"name": q, "cohort": "all", "quota": {"*": share}})
        for q in ("research", "prod", "batch", "infer")
    }


def timed(s: Scheduler, inp: SchedulingInput) -> tuple[float, int, int, float]:
    """(wall seconds, tasks placed, workloads placed, CPU seconds of this process) of one round."""
    c0, t0 = time.process_time(), time.perf_counter()
    result = s.schedule(inp)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    tasks = sum(len(p.assignments) for p in result.placements)
    return dt, tasks, len(result.placements), cpu


def run(n: int, baseline_jobs: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    nodes = make_pool(n, rng)
    first = make_jobs(n, rng, 0.5, "a")  # round 1: an empty pool half filled
    second = make_jobs(n, rng, 0.35, "b")  # round 2: on top of round 1's work, as a live round is
    queues = queues_for(n)
    ours = create_scheduler("default")
    print(f"[N={n}] round 1: {len(first)} jobs, {sum(j.task_count for j in first)} tasks", file=sys.stderr)
    c0, t0 = time.process_time(), time.perf_counter()
    r1 = ours.schedule(SchedulingInput(nodes, queues, [], first, 0.0))
    dt1, cpu1 = time.perf_counter() - t0, time.process_time() - c0
    by_id = {w.job_id: w for w in first}
    holding = [RunningWorkload(by_id[p.job_id], p, started_at=0.0) for p in r1.placements]
    tasks1 = sum(len(p.assignments) for p in r1.placements)
    print(f"[N={n}] round 2 on the busy pool: {len(second)} jobs", file=sys.stderr)
    dt2, tasks2, placed2, cpu2 = timed(ours, SchedulingInput(nodes, queues, holding, second, 60.0))
    dt, tasks, cpu = dt1 + dt2, tasks1 + tasks2, cpu1 + cpu2
    prefix = second[:baseline_jobs]
    print(f"[N={n}] ours {tasks / dt:.0f} placements/s; first fit on {len(prefix)} jobs", file=sys.stderr)
    busy = SchedulingInput(nodes, queues, holding, prefix, 60.0)
    b_dt, b_tasks, _, _ = timed(FirstFitScheduler(), busy)
    o_dt, o_tasks, _, _ = timed(ours, busy)
    ours_rate = o_tasks / o_dt
    base_rate = b_tasks / b_dt
    return {
        "nodes": n,
        "devices": n * 8,
        "jobs": len(first) + len(second),
        "tasks": sum(j.task_count for j in first + second),
        "ours_two_rounds": {
            "placements_per_s": round(tasks / dt, 1),
            "placements_per_cpu_s": round(tasks / max(cpu, 1e-9), 1),
            "tasks_placed": tasks,
            "jobs_placed": len(r1.placements) + placed2,
            "seconds": round(dt, 3),
            "us_per_placement": round(dt / max(tasks, 1) * 1e6, 1),
            "round2_busy_pool_placements_per_s": round(tasks2 / dt2, 1),
        },
        "same_input_busy_pool": {
            "jobs": len(prefix),
            "ours_placements_per_s": round(ours_rate, 1),
            "ours_tasks_placed": o_tasks,
            "first_fit_placements_per_s": round(base_rate, 1),
            "first_fit_tasks_placed": b_tasks,
            "ratio_ours_over_first_fit": round(ours_rate / base_rate, 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--nodes", type=int, action="append", help="pool size (repeatable); default 1000 5000 10000"
    )
    parser.add_argument(
        "--baseline-jobs", type=int, default=300, help="jobs in the prefix first fit is timed on"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    sizes = args.nodes or [1000, 5000, 10000]
    results = [run(n, args.baseline_jobs, args.seed) for n in sizes]
    out: dict[str, Any] = {
        "benchmark": "scheduler_throughput",
        "scheduler": "default",
        "baseline": "first-fit",
        "goal": ">= 1000 placements/s at 5000 nodes; time per placement sub-linear in N",
        "results": results,
    }
    if len(results) > 1:
        first, last = results[0], results[-1]
        growth_n = last["nodes"] / first["nodes"]
        growth_t = (
            last["ours_two_rounds"]["us_per_placement"] / first["ours_two_rounds"]["us_per_placement"]
        )
        out["time_per_placement_growth"] = {"nodes_x": round(growth_n, 1), "time_x": round(growth_t, 2)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
