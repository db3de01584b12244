"""Lineage: record OpenLineage run events, find nodes, walk upstream/downstream, impact queries.

The graph lives in the platform's own database unless ``Settings.lineage_url`` points elsewhere;
the store is opened on first use so that apps that never touch lineage pay nothing. Names may hold
slashes (``s3://raw/a``), hence the ``path`` converter; clients percent-encode them.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelplane.api.app import AppState
from modelplane.data.errors import DataError
from modelplane.data.lineage import (
    MAX_DEPTH,
    LineageHit,
    LineageNode,
    LineageStore,
    open_platform_lineage,
)
from modelplane.data.openlineage_events import JOB_KINDS, record

router = APIRouter(tags=["lineage"])
API_MAX_LIMIT = 10_000
_open_lock = threading.Lock()


def lineage_of(request: Request) -> LineageStore:
    """The app's lineage store: the one given to ``create_app``, else the platform's, opened once."""
    store: LineageStore | None = getattr(request.app.state, "lineage", None)
    if store is None:
        with _open_lock:
            store = getattr(request.app.state, "lineage", None)
            if store is None:
                from modelplane.settings import Settings

                state: AppState = request.app.state.modelplane
                store = open_platform_lineage(Settings().lineage_url or state.store.url)
                request.app.state.lineage = store
    return store


Lineage = Annotated[LineageStore, Depends(lineage_of)]


# --------------------------------------------------------------------------- OpenLineage input
class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # facets and future fields pass through unread


class _Run(_Open):
    runId: str = Field(min_length=1, max_length=255)


class _Job(_Open):
    namespace: str = Field(min_length=1, max_length=255)
    name: str = Field(min_length=1, max_length=1024)
    facets: dict[str, Any] = Field(default_factory=dict)


class _Dataset(_Open):
    namespace: str = Field(min_length=1, max_length=255)
    name: str = Field(min_length=1, max_length=1024)


class RunEventIn(_Open):
    """The fields of an OpenLineage ``RunEvent`` (spec 2-0-2) that the graph needs."""

    eventType: Literal["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"] = "COMPLETE"
    eventTime: str = Field(min_length=1)
    producer: str = Field(min_length=1)
    run: _Run
    job: _Job
    inputs: list[_Dataset] = Field(default_factory=list, max_length=10_000)
    outputs: list[_Dataset] = Field(default_factory=list, max_length=10_000)


def parse_event(body: Any) -> RunEventIn:
    """Validate a RunEvent; the first problem becomes a 400 naming the field (``inputs.0.name``)."""
    if not isinstance(body, dict):
        raise DataError("the body must be an OpenLineage RunEvent JSON object.", field="(body)",
                        hint="send {'eventType', 'eventTime', 'producer', 'run': {'runId'}, "
                             "'job': {'namespace', 'name'}, 'inputs', 'outputs'}")
    try:
        return RunEventIn.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise DataError(f"{path}: {first['msg']}", field=path,
                        hint="see https://openlineage.io/spec/2-0-2/OpenLineage.json for the RunEvent shape") from None


def _job_kind(event: RunEventIn, asked: str | None) -> str:
    """``?job_kind=``, else the event's ``jobType`` facet (PIPELINE/TRAINING/DEPLOYMENT), else pipeline."""
    kind = asked
    if kind is None:
        facet = event.job.facets.get("jobType")
        kind = str(facet.get("jobType", "")).lower() if isinstance(facet, dict) else ""
        kind = kind if kind in JOB_KINDS else "pipeline"
    if kind not in JOB_KINDS:
        raise DataError(f"unknown job kind {kind!r}.", field="job_kind", hint=f"Use one of {', '.join(JOB_KINDS)}.")
    return kind


# --------------------------------------------------------------------------- views
def node_view(n: LineageNode) -> dict[str, Any]:
    return {"id": n.id, "kind": n.kind, "namespace": n.namespace, "name": n.name, "attrs": n.attrs}


def hit_view(h: LineageHit) -> dict[str, Any]:
    return {**node_view(h.node), "depth": h.depth}


def _limit(limit: int) -> int:
    if not 1 <= limit <= API_MAX_LIMIT:
        raise DataError(f"limit {limit} is out of range.", field="limit", hint=f"Use 1..{API_MAX_LIMIT}.")
    return limit


def walk_view(lineage: LineageStore, start: LineageNode, direction: Literal["upstream", "downstream"],
              hits: list[LineageHit], depth: int, *, edges: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"node": node_view(start), "direction": direction, "depth": depth,
                           "items": [hit_view(h) for h in hits]}
    if edges:
        out["edges"] = [{"src": s, "dst": d, "kind": k}
                        for s, d, k in lineage.edges_among([start.id, *(h.node.id for h in hits)])]
    return out


# --------------------------------------------------------------------------- routes
@router.post("/lineage/events", status_code=201)
def post_event(lineage: Lineage, body: Annotated[Any, Body()] = None, job_kind: str | None = None) -> dict[str, Any]:
    """Fold an OpenLineage RunEvent into the graph: inputs -> job -> outputs. A FAIL or ABORT run
    produced nothing, so only its inputs are recorded."""
    event = parse_event(body)
    kind = _job_kind(event, job_kind)
    if event.eventType in ("FAIL", "ABORT"):
        event = event.model_copy(update={"outputs": []})
    job_id = record(lineage, event, job_kind=kind)
    return {"job": node_view(lineage.node(job_id)), "inputs": len(event.inputs),
            "outputs": len(event.outputs) if kind != "deployment" else 0}


@router.get("/lineage/nodes")
def list_nodes(lineage: Lineage, kind: str | None = None, name: str | None = None, namespace: str | None = None,
               limit: int = 50) -> dict[str, Any]:
    """Nodes by kind and namespace, and whose name contains ``name`` (case-insensitive)."""
    return {"items": [node_view(n) for n in lineage.search(kind=kind, name=name, namespace=namespace,
                                                          limit=_limit(limit))]}


def _walk(lineage: LineageStore, direction: Literal["upstream", "downstream"], kind: str, name: str,
          namespace: str | None, depth: int, limit: int, edges: bool) -> dict[str, Any]:
    start = lineage.locate(kind, name, namespace)
    hits = lineage.walk(start.id, direction, depth=depth, limit=_limit(limit))
    return walk_view(lineage, start, direction, hits, depth, edges=edges)


@router.get("/lineage/{kind}/{name:path}/upstream")
def upstream(lineage: Lineage, kind: str, name: str, namespace: str | None = None, depth: int = 5,
             limit: int = 1000, edges: bool = False) -> dict[str, Any]:
    """What ``name`` was made from, nearest first, up to ``depth`` hops (1..64); ``edges=true`` adds
    the edges between the nodes found, to draw them."""
    return _walk(lineage, "upstream", kind, name, namespace, depth, limit, edges)


@router.get("/lineage/{kind}/{name:path}/downstream")
def downstream(lineage: Lineage, kind: str, name: str, namespace: str | None = None, depth: int = 5,
               limit: int = 1000, edges: bool = False) -> dict[str, Any]:
    """What was made from ``name``, nearest first, up to ``depth`` hops (1..64)."""
    return _walk(lineage, "downstream", kind, name, namespace, depth, limit, edges)


@router.get("/lineage/{kind}/{name:path}/impact")
def impact(lineage: Lineage, kind: str, name: str, namespace: str | None = None,
           target: Annotated[str, Query(alias="kind")] = "deployment", depth: int = 20, limit: int = 1000) -> dict[str, Any]:
    """Downstream nodes of kind ``target``: e.g. which deployments were trained on data from source X."""
    start = lineage.locate(kind, name, namespace)
    hits = lineage.impact(start.id, kind=target, depth=depth, limit=_limit(limit))
    return {"node": node_view(start), "kind": target, "depth": depth, "items": [hit_view(h) for h in hits]}


@router.get("/lineage/{kind}/{name:path}")
def show(lineage: Lineage, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    """One node and its direct neighbours."""
    start = lineage.locate(kind, name, namespace)
    return {"node": node_view(start),
            "upstream": [hit_view(h) for h in lineage.upstream(start.id, depth=1, limit=1000)],
            "downstream": [hit_view(h) for h in lineage.downstream(start.id, depth=1, limit=1000)]}


__all__ = ["MAX_DEPTH", "lineage_of", "parse_event", "router"]
