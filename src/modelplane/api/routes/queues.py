"""Queues: quota per accelerator model, usage, borrowing and lending."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from modelplane.api.app import AppState, get_state
from modelplane.api.security import team_scope
from modelplane.core.accounting import queue_usage
from modelplane.core.job import ACTIVE, JobState
from modelplane.core.queue import QueueSpec
from modelplane.store import Store

router = APIRouter(tags=["queues"])
State = Annotated[AppState, Depends(get_state)]


def _gpus(milli: dict[str, int]) -> dict[str, float]:
    return {k: v / 1000 for k, v in sorted(milli.items())}


def queue_views(store: Store) -> list[dict[str, Any]]:
    queues = {q.name: q for q in store.list_queues()}
    nodes = {n.name: n.to_node() for n in store.list_nodes()}
    active, _ = store.list_jobs(states=sorted(ACTIVE), limit=100_000)
    pending, _ = store.list_jobs(states=[JobState.PENDING], limit=100_000)
    usage = queue_usage({k: v.spec for k, v in queues.items()},
                        [(j.queue, j.placement) for j in active if j.placement], nodes)
    out = []
    for name, q in queues.items():
        u = usage[name]
        out.append({
            "name": name,
            "kind": q.spec.kind.value,
            "team": q.spec.team,
            "cohort": q.spec.cohort,
            "quota": _gpus(u.quota),
            "used": _gpus(u.used),
            "borrowed": _gpus(u.borrowed),
            "lent": _gpus(u.lent),
            "running": sum(1 for j in active if j.queue == name),
            "pending": sum(1 for j in pending if j.queue == name),
            "resourceVersion": q.resource_version,
            "spec": q.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        })
    return out


@router.post("/queues", status_code=201)
def upsert_queue(spec: QueueSpec, state: State) -> dict[str, Any]:
    state.store.upsert_queue(spec)
    return next(v for v in queue_views(state.store) if v["name"] == spec.name)


@router.get("/queues")
def list_queues(state: State, team: str | None = None,
                visible_team: Annotated[str | None, Depends(team_scope)] = None) -> dict[str, Any]:
    """Queues of the caller's team (admins: every queue, or one team's with ``team``)."""
    only = team or visible_team
    return {"items": [v for v in queue_views(state.store) if only is None or v["team"] == only]}


@router.get("/queues/{name}")
def get_queue(name: str, state: State) -> dict[str, Any]:
    state.store.get_queue(name)  # NotFound with a hint
    return next(v for v in queue_views(state.store) if v["name"] == name)


@router.delete("/queues/{name}", status_code=204)
def delete_queue(name: str, state: State) -> None:
    state.store.delete_queue(name)
