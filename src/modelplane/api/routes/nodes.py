"""Nodes: register, heartbeat, label, cordon, drain, remove."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, Field

from modelplane.api.app import AppState, get_state
from modelplane.core.errors import Conflict
from modelplane.core.job import JobState
from modelplane.core.node import NodeSpec, NodeState
from modelplane.obs.metrics import NODE_DRAINS
from modelplane.store import NodeRecord

router = APIRouter(tags=["nodes"])
State = Annotated[AppState, Depends(get_state)]


def node_view(n: NodeRecord) -> dict[str, Any]:
    return {
        "name": n.name,
        "state": n.state.value,
        "lastHeartbeat": n.last_heartbeat,
        "resourceVersion": n.resource_version,
        "spec": n.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


@router.post("/nodes", status_code=201)
def register_node(spec: NodeSpec, state: State) -> dict[str, Any]:
    return node_view(state.store.upsert_node(spec))


@router.get("/nodes")
def list_nodes(state: State) -> dict[str, Any]:
    return {"items": [node_view(n) for n in state.store.list_nodes()]}


@router.get("/nodes/{name}")
def get_node(name: str, state: State) -> dict[str, Any]:
    return node_view(state.store.get_node(name))


@router.post("/nodes/{name}/heartbeat")
def heartbeat(name: str, state: State) -> dict[str, Any]:
    return node_view(state.store.heartbeat_node(name))


@router.post("/nodes/{name}/cordon")
def cordon(name: str, state: State) -> dict[str, Any]:
    """No new work is placed on the node; what runs there keeps running."""
    return node_view(state.store.set_node_state(name, NodeState.CORDONED))


@router.post("/nodes/{name}/uncordon")
def uncordon(name: str, state: State) -> dict[str, Any]:
    return node_view(state.store.set_node_state(name, NodeState.READY))


class DrainRequest(BaseModel):
    """Why the node is drained; node agents send ``SpotInterruption`` with the cloud's notice."""

    reason: str = Field(default="Drained", pattern=r"^[A-Z][A-Za-z0-9]{0,62}$",
                        description="CamelCase reason, recorded on each job running on the node")
    message: str = Field(default="", max_length=2000)


class LabelPatch(BaseModel):
    """Labels to set (a string) or remove (null); labels not named are kept."""

    labels: dict[Annotated[str, Field(pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]"
                                              r"{0,61}[A-Za-z0-9])?$")],
                 Annotated[str, Field(max_length=1000)] | None]


@router.patch("/nodes/{name}/labels")
def patch_labels(name: str, patch: LabelPatch, state: State) -> dict[str, Any]:
    """Merge labels into the node's spec (a node agent publishes its peer-memory URL this way),
    retrying on a concurrent change (a heartbeat that revives the node bumps its version)."""
    for _ in range(5):
        rec = state.store.get_node(name)
        labels = dict(rec.spec.labels)
        for key, value in patch.labels.items():
            if value is None:
                labels.pop(key, None)
            else:
                labels[key] = value
        if labels == rec.spec.labels:
            return node_view(rec)
        try:
            spec = rec.spec.model_copy(update={"labels": labels})
            return node_view(state.store.upsert_node(spec, expected_version=rec.resource_version))
        except Conflict:
            continue
    raise Conflict(f"node {name!r} kept changing while its labels were updated", hint="retry the request")


@router.post("/nodes/{name}/drain")
def drain(name: str, state: State, body: Annotated[DrainRequest | None, Body()] = None) -> dict[str, Any]:
    """No new work; the job controller checkpoints and moves what runs there. The reason is
    recorded as an event on every job placed on the node, so a job's history says why it moved."""
    why = body or DrainRequest()
    before = state.store.get_node(name)
    rec = state.store.set_node_state(name, NodeState.DRAINING)
    if before.state is not NodeState.DRAINING:
        NODE_DRAINS.labels(why.reason).inc()
        message = why.message or f"node {name} is draining"
        jobs, _ = state.store.list_jobs(states=[JobState.ADMITTED, JobState.RUNNING], limit=100_000)
        for job in jobs:
            if job.placement and any(a.node == name for a in job.placement.assignments):
                state.store.add_event(job.id, why.reason, message, type="Warning")
    return node_view(rec)


@router.delete("/nodes/{name}", status_code=204)
def delete_node(name: str, state: State) -> None:
    state.store.delete_node(name)
