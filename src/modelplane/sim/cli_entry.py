"""What ``modelplane sim`` calls: one replay, a JSON-ready summary, PNG plots, a progress bar.

``run_sim(trace, policy, out_dir, ...)``:

* ``trace="openb"`` or ``"openb:<pod list>"`` (e.g. ``openb:gpuspec33``): the FGD paper's placement
  replay; ``policy`` is a node scorer (``random``, ``dotprod``, ``gpuclustering``, ``gpupacking``,
  ``bestfit``, ``fgd``; ``default`` = the scheduler's default scorer). Plot: allocation ratio
  against arrived GPU requests.
* ``trace="philly"`` or ``"itp:<cluster 1-10>"``: the discrete-event replay of a job trace on a pool
  of ``nodes`` 8-GPU nodes (``pool="spot"`` uses the alibaba-spot-gpu-2026 node list instead);
  ``policy`` is a baseline (``fifo``, ``srtf``, ``tiresias``, ``easy``) or a scheduler name of
  ``scheduler.registry`` (``default``, ...). Plots: queueing-delay CDF and GPU utilisation over time.

Returns the summary dict (also written to ``out_dir/summary.json``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelplane.core.errors import ModelplaneError
from modelplane.scheduler.interface import Scheduler


class SimUsageError(ModelplaneError):
    """A trace or policy name the simulator does not know."""


def _progress() -> tuple[Any, Callable[[str, int], Callable[[int, int], None]]]:
    from rich.console import Console
    from rich.progress import Progress

    progress = Progress(console=Console(stderr=True))

    def bar(name: str, total: int) -> Callable[[int, int], None]:
        task = progress.add_task(name, total=total)
        return lambda done, tot: progress.update(task, completed=done, total=tot)

    return progress, bar


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_sim(
    trace: str,
    policy: str = "default",
    out_dir: str | Path = "sim-out",
    *,
    seed: int = 42,
    nodes: int = 64,
    pool: str = "uniform",
    start_day: float = 0.0,
    days: float | None = None,
    round_interval: float = 60.0,
    node_list: str = "openb_node_list_gpu_node.csv",
    trace_root: str | Path | None = None,
) -> dict[str, object]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kind, _, arg = trace.partition(":")
    if kind == "openb":
        summary = _run_openb(arg or "default", policy, out, seed, node_list, trace_root)
    elif kind in ("philly", "itp"):
        summary = _run_jobs(kind, arg, policy, out, nodes, pool, start_day, days, round_interval, trace_root)
    else:
        raise SimUsageError(f"unknown trace {trace!r}", hint="use openb[:<pod list>], philly or itp:<1-10>", field="trace")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _run_openb(pods_name: str, policy: str, out: Path, seed: int, node_list: str, root: str | Path | None) -> dict[str, object]:
    from modelplane.scheduler.scores import DEFAULT_SCORER
    from modelplane.sim.openb import POLICIES, replay
    from modelplane.sim.traces.openb import load_openb_nodes, load_openb_pods

    scorer = DEFAULT_SCORER if policy == "default" else policy
    if scorer not in POLICIES:
        raise SimUsageError(f"unknown placement policy {policy!r} for openb", hint=f"use default or one of {', '.join(POLICIES)}",
                            field="policy")
    nodes = load_openb_nodes(node_list, root)
    requests = [p.request for p in load_openb_pods(pods_name, root)]
    progress, bar = _progress()
    with progress:
        cb = bar(f"openb {pods_name} {scorer}", 1)
        r = replay(nodes, requests, scorer, seed, progress=cb)
        cb(1, 1)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    points = list(range(0, 131))
    ax.plot(points, r.curve(points), label=scorer)
    ax.plot([0, 100], [0, 100], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("arrived GPU requests (% of capacity)")
    ax.set_ylabel("allocated GPUs (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    path = out / "allocation.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {
        "trace": f"openb:{pods_name}", "policy": scorer, "seed": seed, "node_list": node_list,
        "allocated_at_100": round(r.ratio_at(100), 2), "allocated_at_130": round(r.ratio_at(130), 2),
        "placed": r.placed, "failed": r.failed, "plots": [str(path)],
    }


def _scheduler(policy: str) -> Scheduler:
    from modelplane.scheduler.registry import UnknownScheduler, create_scheduler
    from modelplane.sim.policies import BASELINES, create_baseline

    if policy in BASELINES:
        return create_baseline(policy)
    try:
        return create_scheduler(policy)
    except UnknownScheduler as e:
        raise SimUsageError(f"unknown policy {policy!r}", hint=f"use one of {', '.join(sorted(BASELINES))} or a scheduler name; {e.hint}",
                            field="policy") from None


def _run_jobs(kind: str, arg: str, policy: str, out: Path, n_nodes: int, pool: str, start_day: float,
              days: float | None, round_interval: float, root: str | Path | None) -> dict[str, object]:
    from modelplane.sim.engine import Simulator
    from modelplane.sim.traces.itp import load_itp_jobs
    from modelplane.sim.traces.philly import load_philly_jobs, load_philly_vcs
    from modelplane.sim.traces.spot import load_spot_nodes
    from modelplane.sim.workloads import gpu_pool, proportional_queues, sim_jobs

    scheduler = _scheduler(policy)  # before loading: a wrong name fails fast
    if kind == "philly":
        pj = load_philly_jobs(root)
        rows = [(j.job_id, j.vc, j.gpus, j.submit, j.duration) for j in pj]
        shares = {k: float(v) for k, v in load_philly_vcs(root).items()}
    else:
        ij = load_itp_jobs(arg or "1", root)
        rows = [(j.job_id, "itp", j.gpus, j.submit, j.duration) for j in ij]
        shares = {"itp": 1.0}
    t0 = start_day * 86400
    t1 = t0 + days * 86400 if days is not None else float("inf")
    rows = [(j, q, g, s - t0, d) for j, q, g, s, d in rows if t0 <= s < t1]
    nodes = load_spot_nodes(root) if pool == "spot" else gpu_pool(n_nodes)
    if pool == "spot":
        from modelplane.core.queue import QueueSpec

        queues = {q: QueueSpec(name=f"q{i}", cohort="all") for i, q in enumerate(sorted({r[1] for r in rows}))}
    else:
        queues = proportional_queues(shares, n_nodes * 8, sorted({r[1] for r in rows}))
    progress, bar = _progress()
    with progress:
        cb = bar(f"{kind} {policy}", len(rows))
        res = Simulator(nodes, queues, scheduler, round_interval=round_interval).run(sim_jobs(rows), progress=cb)
        cb(len(rows), len(rows))
    summary = res.summary()
    plt = _plt()
    waits = sorted(r.waited for r in res.records if r.start is not None)
    fig, ax = plt.subplots(figsize=(6, 4))
    if waits:
        ax.plot(waits, [(i + 1) / len(waits) for i in range(len(waits))])
    ax.set_xscale("symlog", linthresh=60)
    ax.set_xlabel("queueing delay (s)")
    ax.set_ylabel("fraction of jobs")
    ax.grid(alpha=0.3)
    cdf = out / "queueing_delay_cdf.png"
    fig.tight_layout()
    fig.savefig(cdf, dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if res.samples and res.capacity_gpus:
        ax.step([s[0] / 3600 for s in res.samples], [s[1] / res.capacity_gpus for s in res.samples], where="post")
    ax.set_xlabel("time (h)")
    ax.set_ylabel("GPU utilisation")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    util = out / "utilization.png"
    fig.tight_layout()
    fig.savefig(util, dpi=110)
    plt.close(fig)
    summary.update({"trace": trace_label(kind, arg), "policy": policy, "pool": pool,
                    "nodes": len(nodes), "plots": [str(cdf), str(util)]})
    return summary


def trace_label(kind: str, arg: str) -> str:
    return f"{kind}:{arg}" if arg else kind
