"""Kueue's scheduler performance baseline, replicated on our simulator with our default policy.

Scenario (kubernetes-sigs/kueue ``test/performance/scheduler/configs/baseline/generator.yaml``):
5 cohorts x 6 cluster queues, nominal quota 20 units each, borrowing limit 100, reclaim within the
cohort, preemption of lower priority within a queue. Per queue, three generators run at once, each
sleeping its interval before every creation: 350 small (1 unit, priority 50, 200 ms runtime, every
100 ms), 100 medium (5 units, priority 100, 500 ms, every 500 ms), 50 large (20 units, priority
200, 1,000 ms, every 1,200 ms): 15,000 workloads. A workload runs its runtime once admitted.

Kueue's published figures (rangespec.yaml, mean of 5 runs): wall time 351 s, quota usage 58.7%
(time-averaged usage / nominal quota, from the first to the last event), mean time to admission
large 6.7 s, medium 76.8 s, small 215.5 s.

Kueue measures a real controller against an API server (envtest); here the clock is virtual and
admission is instantaneous, so 'wall time' is the virtual makespan (the figure to compare), and
the compute time of our scheduler is reported beside it. Quota is the only resource (as in Kueue's
test, which runs no pods): the pool is one node holding 600 units.

    PYTHONPATH=src .venv/bin/python benchmarks/kueue_baseline.py
"""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.progress import Progress

from modelplane.core.node import Node
from modelplane.core.queue import QueueSpec
from modelplane.core.workload import PodSet, TaskRequest, Workload
from modelplane.scheduler.registry import create_scheduler
from modelplane.sim.engine import SimJob, Simulator

MODEL = "rf"
KUEUE_WALL_S = 351.1
KUEUE_USAGE_PCT = 58.7
KUEUE_ADMISSION_S: dict[str, float] = {"large": 6.666, "medium": 76.768, "small": 215.468}
KUEUE = {"wall_s": KUEUE_WALL_S, "quota_usage_pct": KUEUE_USAGE_PCT, "admission_s": KUEUE_ADMISSION_S}
CLASSES = [  # name, count, interval s, runtime s, priority, units
    ("small", 350, 0.1, 0.2, 50, 1),
    ("medium", 100, 0.5, 0.5, 100, 5),
    ("large", 50, 1.2, 1.0, 200, 20),
]


def scenario(cohorts: int = 5, per_cohort: int = 6) -> tuple[list[Node], dict[str, QueueSpec], list[SimJob]]:
    queues: dict[str, QueueSpec] = {}
    jobs: list[SimJob] = []
    for c in range(cohorts):
        for q in range(per_cohort):
            name = f"cq-{c}-{q}"
            queues[name] = QueueSpec(
                name=name, kind="batch", cohort=f"cohort-{c}", quota={MODEL: 20}, borrowing_limit={MODEL: 100}
            )
            for cls, count, interval, runtime, prio, units in CLASSES:
                for i in range(count):
                    submit = round((i + 1) * interval, 3)
                    req = TaskRequest(
                        cpu_milli=0, memory_mib=0, gpu_count=units, gpu_milli=1000, gpu_models=(MODEL,)
                    )
                    w = Workload(
                        job_id=f"{name}/{cls}-{i}",
                        name=f"{cls}-{i}",
                        queue=name,
                        kind="batch",
                        pod_sets=(PodSet("main", 1, req),),
                        priority=prio,
                        created_at=submit,
                        estimated_duration_s=runtime,
                        team=cls,
                    )
                    jobs.append(SimJob(w, runtime))
    capacity = 20 * cohorts * per_cohort
    pool = [Node(name="quota", cpu_milli=10**9, memory_mib=10**9, gpu_model=MODEL, gpu_count=capacity)]
    return pool, queues, jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="default")
    ap.add_argument(
        "--round-interval",
        type=float,
        default=0.5,
        help="virtual seconds between scheduling rounds (0: at every event)",
    )
    args = ap.parse_args()
    pool, queues, jobs = scenario()
    sched = create_scheduler(args.policy)
    t0 = time.perf_counter()
    with Progress(console=Console(stderr=True)) as progress:
        bar = progress.add_task("kueue baseline", total=len(jobs))
        res = Simulator(pool, queues, sched, round_interval=args.round_interval).run(
            jobs, progress=lambda d, t: progress.update(bar, completed=d)
        )
        progress.update(bar, completed=len(jobs))
    compute = time.perf_counter() - t0
    first = min(r.submit for r in res.records)
    last = max(r.end or r.submit for r in res.records)
    capacity = float(res.capacity_gpus)
    busy = 0.0
    for (ta, used, _), (tb, _, _) in zip(res.samples, res.samples[1:], strict=False):
        busy += used * (tb - ta)
    usage = 100 * busy / (capacity * (last - first)) if last > first else 0.0
    by_class: dict[str, list[float]] = {}
    for r, j in zip(res.records, jobs, strict=True):
        if r.start is not None:
            by_class.setdefault(j.workload.team, []).append(r.start - r.submit)
    admission = {c: round(sum(v) / len(v), 3) for c, v in by_class.items()}
    out = {
        "benchmark": "kueue_baseline",
        "workloads": len(jobs),
        "policy": args.policy,
        "ours": {
            "wall_s_virtual": round(last, 2),
            "quota_usage_pct": round(usage, 1),
            "mean_time_to_admission_s": admission,
            "never_admitted": sum(1 for r in res.records if r.start is None),
            "preemptions": sum(r.preemptions for r in res.records),
            "scheduler_compute_s": round(compute, 1),
            "rounds": res.rounds,
        },
        "kueue": KUEUE,
        "ratios_ours_over_kueue": {
            "wall": round(last / KUEUE_WALL_S, 3),
            "admission": {
                c: round(admission.get(c, float("nan")) / v, 3) for c, v in KUEUE_ADMISSION_S.items()
            },
        },
        "better_on_every_figure": bool(
            last < KUEUE_WALL_S
            and usage > KUEUE_USAGE_PCT
            and all(admission.get(c, float("inf")) < v for c, v in KUEUE_ADMISSION_S.items())
        ),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
