"""Import a whole cluster file (nodes and queues) in one call."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from modelplane.api.app import AppState, get_state
from modelplane.core.cluster import parse_cluster

router = APIRouter(tags=["cluster"])
State = Annotated[AppState, Depends(get_state)]


@router.post("/cluster/import")
def import_cluster(state: State, doc: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    cluster = parse_cluster(doc)
    for n in cluster.spec.nodes:
        state.store.upsert_node(n)
    for q in cluster.spec.queues:
        state.store.upsert_queue(q)
    return {"nodes": [n.name for n in cluster.spec.nodes], "queues": [q.name for q in cluster.spec.queues]}
