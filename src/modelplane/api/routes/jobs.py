"""Jobs: apply a manifest, read, list, cancel, events, logs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Response

from modelplane.api.app import AppState, get_state
from modelplane.api.security import team_scope
from modelplane.core.errors import Conflict, InvalidSpec, ModelplaneError, NotFound
from modelplane.core.job import TERMINAL, JobState
from modelplane.core.priority import compute_priority
from modelplane.core.spec import parse_manifest, to_workload
from modelplane.scheduler.first_fit import unsatisfiable
from modelplane.store import JobRecord

router = APIRouter(tags=["jobs"])
State = Annotated[AppState, Depends(get_state)]


def job_view(state: AppState, job: JobRecord, detail: bool = False) -> dict[str, Any]:
    out = job.to_dict()
    if detail:
        out["tasks"] = [t.to_dict() for t in state.store.list_tasks(job.id)]
        out["events"] = [e.to_dict() for e in state.store.list_events(job.id)]
    else:
        out.pop("manifest", None)
    return out


@router.post("/jobs", status_code=201)
def apply_job(
    state: State,
    response: Response,
    doc: Annotated[dict[str, Any], Body(description="a job manifest: apiVersion, kind, metadata, spec")],
    idempotency_key: Annotated[str | None, Header(max_length=64)] = None,
) -> dict[str, Any]:
    """Submit a job. With an ``Idempotency-Key`` header a retried request never creates a duplicate.
    Applying the very same manifest again is a no-op (200); a different job with a taken name is 409."""
    store = state.store
    manifest = parse_manifest(doc)
    from modelplane.store.sensitive_catalog import check_submission

    check_submission(store, manifest)  # a declared sensitive dataset needs spec.tee (data/sensitive.py)
    labels = manifest.metadata.labels
    if manifest.kind == "InferenceDeployment" and "modelplane.io/deployment" not in labels:
        # A deployment is a parent object whose controller creates one job per replica.
        from modelplane.api.routes.deployments import create_deployment

        out = create_deployment(state, doc)
        if out.get("unchanged") or out.get("configured"):
            response.status_code = 200
        return out
    try:
        existing = store.get_job(manifest.metadata.name)
    except NotFound:
        existing = None
    if existing is not None and not idempotency_key:
        if existing.manifest_doc == doc:
            response.status_code = 200
            return job_view(state, existing) | {"unchanged": True}
        raise Conflict(f"a job named {manifest.metadata.name!r} already exists with a different spec",
                       hint="choose another metadata.name, or delete the old job first", field="metadata.name")
    queue = store.get_queue(manifest.spec.queue)
    nodes = [n.to_node() for n in store.list_nodes()]
    why = unsatisfiable(to_workload(manifest, "check", 0.0), nodes)
    if why:
        raise InvalidSpec(f"no node can ever run this job: {why}",
                          hint="relax spec.affinity / nodeSelector / tolerations / resources, "
                               "or list what the pool offers with 'modelplane get nodes'", field="spec")
    w = to_workload(manifest, "check", 0.0)
    priority = compute_priority(manifest.kind, w.total_gpu_milli, manifest.spec.estimated_duration, w.deadline,
                                store.clock(), queue_priority=queue.spec.priority, explicit=manifest.spec.priority)
    job = store.create_job(doc, priority=priority, request_id=idempotency_key)
    return job_view(state, job)


@router.get("/jobs")
def list_jobs(
    state: State,
    job_state: Annotated[list[str] | None, Query(alias="state")] = None,
    queue: str | None = None,
    kind: str | None = None,
    team: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: str | None = None,
    visible_team: Annotated[str | None, Depends(team_scope)] = None,
) -> dict[str, Any]:
    """Jobs of the caller's team (the guard refuses another team's); admins see every team's."""
    team = team or visible_team
    states = None
    if job_state:
        try:
            states = [JobState(s) for s in job_state]
        except ValueError:
            raise InvalidSpec(f"unknown job state in {job_state}",
                              hint=f"use one of: {', '.join(s.value for s in JobState)}", field="state") from None
    jobs, nxt = state.store.list_jobs(states=states, queue=queue, kind=kind, team=team, limit=limit, after=after)
    return {"items": [job_view(state, j) for j in jobs], "next": nxt}


@router.get("/jobs/{name}")
def get_job(name: str, state: State) -> dict[str, Any]:
    return job_view(state, state.store.get_job(name), detail=True)


@router.get("/jobs/{name}/events")
def job_events(name: str, state: State) -> dict[str, Any]:
    job = state.store.get_job(name)
    return {"items": [e.to_dict() for e in state.store.list_events(job.id)]}


@router.delete("/jobs/{name}")
def cancel_job(name: str, state: State, purge: bool = False) -> dict[str, Any]:
    """Cancel a job (the job controller stops its tasks). ``purge=true`` removes a finished job."""
    store = state.store
    job = store.get_job(name)
    if purge:
        if job.state not in TERMINAL:
            raise Conflict(f"job {name!r} is {job.state.value}; only finished jobs can be purged",
                           hint="cancel it first, then purge")
        store.delete_job(job.id)
        return {"name": name, "purged": True}
    if job.state in TERMINAL:
        return job_view(state, job)
    if not job.cancel_requested:
        job = store.update_job_fields(job.id, cancel_requested=True)
        store.add_event(job.id, "CancelRequested", "cancellation requested")
    return job_view(state, job)


@router.get("/jobs/{name}/logs")
def job_logs(name: str, state: State, rank: int | None = None,
             offsets: Annotated[str, Query(description="rank:offset pairs, comma-separated")] = "") -> dict[str, Any]:
    """Task logs from byte offsets (for ``logs -f``): each item carries the offset to continue from."""
    job = state.store.get_job(name)
    if state.log_reader is None:
        raise ModelplaneError("this server has no backend to read logs from",
                              hint="run 'modelplane up' or set MODELPLANE_BACKEND", field="backend")
    start: dict[int, int] = {}
    for pair in filter(None, offsets.split(",")):
        try:
            rank_text, offset_text = pair.split(":")
            start[int(rank_text)] = int(offset_text)
        except ValueError:
            raise InvalidSpec(f"offsets: cannot read {pair!r}", hint="write rank:offset pairs such as 0:120,1:0",
                              field="offsets") from None
    tasks = state.store.list_tasks(job.id)
    ranks = [rank] if rank is not None else [t.rank for t in tasks]
    if rank is not None and rank not in {t.rank for t in tasks}:
        raise NotFound(f"job {name!r} has no task of rank {rank}",
                       hint=f"ranks: {', '.join(str(t.rank) for t in tasks) or 'none started yet'}")
    items = []
    for r in ranks:
        text, offset = state.log_reader.read_logs(job.id, r, start.get(r, 0))
        items.append({"rank": r, "text": text, "offset": offset})
    return {"items": items, "state": job.state.value}
