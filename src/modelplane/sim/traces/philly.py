"""philly-2017 (Microsoft Philly via Pollux's artifact): 82k jobs of 15 virtual clusters.

Jobs: ``timestamp,duration,num_gpus,gpu_time,cluster`` (``cluster`` is the virtual cluster, i.e.
the team queue). ``philly_vc.csv`` gives the node count of 11 of the 15 VCs; ``philly_revised_machine_list.csv``
the GPUs per machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from modelplane.sim.traces import TraceError, read_rows, to_int, trace_root

FOLDER = "philly-2017"
JOBS = "philly_jobs_82k_from_pollux.csv"


@dataclass(frozen=True)
class PhillyJob:
    job_id: str
    submit: float  # seconds since the first submission of the trace
    duration: float
    gpus: int
    vc: str


def load_philly_jobs(root: str | Path | None = None, limit: int | None = None) -> list[PhillyJob]:
    """Jobs sorted by submission, times relative to the first one."""
    path = trace_root(root) / FOLDER / JOBS
    raw: list[tuple[datetime, float, int, str]] = []
    for rec in read_rows(path, ("timestamp", "duration", "num_gpus", "cluster")):
        try:
            ts = datetime.strptime(rec["timestamp"], "%Y-%m-%d %H:%M:%S")
            dur = float(rec["duration"])
        except ValueError:
            raise TraceError(f"{path}:{rec['__line__']}: bad timestamp or duration", field="timestamp") from None
        raw.append((ts, dur, to_int(rec, "num_gpus", path), rec["cluster"]))
    raw.sort(key=lambda r: r[0])
    if limit is not None:
        raw = raw[:limit]
    if not raw:
        return []
    t0 = raw[0][0]
    return [PhillyJob(f"philly-{i:05d}", (ts - t0).total_seconds(), max(dur, 1.0), g, vc)
            for i, (ts, dur, g, vc) in enumerate(raw)]


def load_philly_vcs(root: str | Path | None = None) -> dict[str, int]:
    """Virtual cluster -> node count (the quota shares of the trace)."""
    path = trace_root(root) / FOLDER / "philly_vc.csv"
    return {rec["vc"]: to_int(rec, "node num", path) for rec in read_rows(path, ("vc", "node num"))}


def load_philly_machines(root: str | Path | None = None) -> list[int]:
    """GPUs per machine of the revised machine list (552 machines)."""
    path = trace_root(root) / FOLDER / "philly_revised_machine_list.csv"
    return [to_int(rec, "number of GPUs", path) for rec in read_rows(path, ("machineId", "number of GPUs"))]
