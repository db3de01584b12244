"""Nodes: register, heartbeat, cordon, drain, remove."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from modelplane.api.app import AppState, get_state
from modelplane.core.node import NodeSpec, NodeState
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


@router.post("/nodes/{name}/drain")
def drain(name: str, state: State) -> dict[str, Any]:
    """No new work; the job controller moves what runs there (as for a lost node)."""
    return node_view(state.store.set_node_state(name, NodeState.DRAINING))


@router.delete("/nodes/{name}", status_code=204)
def delete_node(name: str, state: State) -> None:
    state.store.delete_node(name)
