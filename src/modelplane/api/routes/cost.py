"""Cost: GPU-hours and money per job, team and queue over a window, and the pool's idle cost."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from modelplane.api.app import AppState, get_state
from modelplane.core.cost import CostLine, JobUsage, cost_report

router = APIRouter(tags=["cost"])
State = Annotated[AppState, Depends(get_state)]


def _line(c: CostLine) -> dict[str, float]:
    return {"gpuHours": round(c.gpu_hours, 4), "cost": round(c.cost, 4), "spotCost": round(c.spot_cost, 4)}


@router.get("/cost")
def cost(state: State, since_seconds: Annotated[float, Query(gt=0, le=400 * 86400)] = 7 * 86400) -> dict[str, Any]:
    """Cost of the last ``since_seconds`` (default 7 days) from node prices and job placements."""
    store = state.store
    until = store.clock()
    since = until - since_seconds
    nodes = {n.name: n.to_node() for n in store.list_nodes()}
    jobs, _ = store.list_jobs(limit=1_000_000)
    usages = [JobUsage(j.id, j.name, j.team, j.queue, j.placement, j.started_at, j.finished_at)
              for j in jobs if j.placement is not None and j.started_at is not None
              and (j.finished_at is None or j.finished_at >= since)]
    report = cost_report(usages, nodes, since, until)
    return {
        "since": since, "until": until,
        "poolCost": round(report.pool_cost, 4), "usedCost": round(report.used_cost, 4),
        "idleCost": round(report.idle_cost, 4),
        "byTeam": {k: _line(v) for k, v in sorted(report.by_team.items())},
        "byQueue": {k: _line(v) for k, v in sorted(report.by_queue.items())},
        "byJob": {k: _line(v) for k, v in sorted(report.by_job.items(), key=lambda kv: -kv[1].cost)},
    }
