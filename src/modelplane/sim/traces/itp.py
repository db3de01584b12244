"""microsoft-itp-2020 (ElasticFlow, ASPLOS'23): 69k jobs in 10 clusters, up to 64 GPUs a job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelplane.sim.traces import read_rows, to_int, trace_root

FOLDER = "microsoft-itp-2020"


@dataclass(frozen=True)
class ItpJob:
    job_id: str
    submit: float
    duration: float
    gpus: int
    cluster: str


def load_itp_jobs(cluster: int | str = 1, root: str | Path | None = None) -> list[ItpJob]:
    """Jobs of one cluster (1-10), sorted by submission, times relative to the first."""
    name = f"cluster{int(cluster):02d}" if str(cluster).isdigit() else str(cluster)
    path = trace_root(root) / FOLDER / f"{name}.csv"
    rows = [
        (to_int(rec, "submission_time", path), float(to_int(rec, "duration", path)), to_int(rec, "num_gpu", path), rec["job_id"])
        for rec in read_rows(path, ("job_id", "submission_time", "duration", "num_gpu"))
    ]
    rows.sort()
    if not rows:
        return []
    t0 = rows[0][0]
    return [ItpJob(jid, float(t - t0), max(d, 1.0), g, name) for t, d, g, jid in rows]
