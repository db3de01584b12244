"""Repositories over the tables: the only code that reads or writes the database.

Every object carries a ``resource_version``; writes that name the version they read fail with
Conflict when someone else wrote in between (optimistic concurrency), so two controllers never
silently overwrite each other. Job state changes go through ``core.job.decide`` — here and nowhere
else are they written.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from modelplane.core.errors import Conflict, InvalidSpec, NotFound
from modelplane.core.job import TERMINAL, JobState, JobStatus, decide
from modelplane.core.node import Node, NodeSpec, NodeState
from modelplane.core.placement import Placement, TaskAssignment
from modelplane.core.queue import QueueSpec
from modelplane.core.spec import Manifest, parse_manifest
from modelplane.store import tables as t

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class NodeRecord:
    spec: NodeSpec
    state: NodeState
    last_heartbeat: float | None
    resource_version: int
    created_at: float

    @property
    def name(self) -> str:
        return self.spec.name

    def to_node(self) -> Node:
        return Node.from_spec(self.spec, self.state)


@dataclass(frozen=True)
class QueueRecord:
    spec: QueueSpec
    resource_version: int
    created_at: float

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class JobRecord:
    id: str
    name: str
    kind: str
    team: str
    queue: str
    manifest_doc: dict[str, Any]
    state: JobState
    reason: str
    message: str
    restarts: int
    max_restarts: int
    priority: int
    placement: Placement | None
    pending_reason: str
    cancel_requested: bool
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    last_checkpoint_at: float | None
    resource_version: int

    @property
    def manifest(self) -> Manifest:
        return parse_manifest(self.manifest_doc)

    @property
    def status(self) -> JobStatus:
        return JobStatus(self.state, self.restarts, self.max_restarts, self.reason, self.message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "team": self.team,
            "queue": self.queue,
            "state": self.state.value,
            "reason": self.reason,
            "message": self.message,
            "restarts": self.restarts,
            "priority": self.priority,
            "pendingReason": self.pending_reason,
            "cancelRequested": self.cancel_requested,
            "placement": [a.to_dict() for a in self.placement.assignments] if self.placement else None,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "resourceVersion": self.resource_version,
            "manifest": self.manifest_doc,
        }


@dataclass(frozen=True)
class EventRecord:
    id: int
    job_id: str
    time: float
    type: str
    from_state: str | None
    to_state: str | None
    reason: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "type": self.type,
            "from": self.from_state,
            "to": self.to_state,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True)
class TaskRecord:
    job_id: str
    rank: int
    pod_set: str
    node: str
    phase: str
    exit_code: int | None
    message: str
    handle: str
    updated_at: float
    endpoint: str = ""  # where a serving task answers (http://host:port); empty for other tasks

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "podSet": self.pod_set,
            "node": self.node,
            "phase": self.phase,
            "exitCode": self.exit_code,
            "message": self.message,
            "endpoint": self.endpoint,
        }


@dataclass(frozen=True)
class DeploymentRecord:
    """An InferenceDeployment: the user's manifest, the desired replica count, the controller's
    status (replicas, endpoints, decisions) and the gateway's latest load sample."""

    name: str
    team: str
    queue: str
    manifest_doc: dict[str, Any]
    desired: int
    status: dict[str, Any]
    load: dict[str, Any]
    load_at: float | None
    deleting: bool
    created_at: float
    updated_at: float
    resource_version: int

    @property
    def manifest(self) -> Manifest:
        return parse_manifest(self.manifest_doc)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "InferenceDeployment",
            "team": self.team,
            "queue": self.queue,
            "model": self.manifest_doc.get("spec", {}).get("model", ""),
            "desired": self.desired,
            "ready": int(self.status.get("ready", 0)),
            "state": "Deleting" if self.deleting else str(self.status.get("phase", "Pending")),
            "status": self.status,
            "load": self.load,
            "loadAt": self.load_at,
            "deleting": self.deleting,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "resourceVersion": self.resource_version,
            "manifest": self.manifest_doc,
        }


def _deployment_from_row(r: Any) -> DeploymentRecord:
    return DeploymentRecord(r.name, r.team, r.queue, r.manifest, r.desired, dict(r.status or {}), dict(r.load or {}),
                            r.load_at, bool(r.deleting), r.created_at, r.updated_at, r.resource_version)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Pooled connections: opening and closing a SQLite connection (and its WAL checkpoint) per
        # call cost more than the queries themselves.
        engine = create_engine(url, pool_size=8, max_overflow=24,
                               connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _job_from_row(r: Any) -> JobRecord:
    placement = None
    if r.placement is not None:
        placement = Placement(r.id, tuple(TaskAssignment.from_dict(a) for a in r.placement))
    return JobRecord(
        id=r.id,
        name=r.name,
        kind=r.kind,
        team=r.team,
        queue=r.queue,
        manifest_doc=r.manifest,
        state=JobState(r.state),
        reason=r.reason,
        message=r.message,
        restarts=r.restarts,
        max_restarts=r.max_restarts,
        priority=r.priority,
        placement=placement,
        pending_reason=r.pending_reason,
        cancel_requested=bool(r.cancel_requested),
        created_at=r.created_at,
        updated_at=r.updated_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        last_checkpoint_at=r.last_checkpoint_at,
        resource_version=r.resource_version,
    )


class Store:
    """One handle on the database; thread-safe (each call uses its own connection)."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time, run_migrations: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.clock = clock
        if run_migrations:
            migrate(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- nodes ------------------------------------------------------------------------------------

    def upsert_node(self, spec: NodeSpec, expected_version: int | None = None) -> NodeRecord:
        now = self.clock()
        doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        with self._tx() as c:
            row = c.execute(select(t.nodes).where(t.nodes.c.name == spec.name)).first()
            if row is None:
                if expected_version not in (None, 0):
                    raise NotFound(f"node {spec.name!r} does not exist", hint="register it first")
                c.execute(insert(t.nodes).values(name=spec.name, spec=doc, state=NodeState.READY.value,
                                                 last_heartbeat=now, resource_version=1, created_at=now,
                                                 updated_at=now))
            else:
                self._versioned_update(c, t.nodes, t.nodes.c.name == spec.name, row.resource_version,
                                       expected_version, f"node {spec.name!r}", spec=doc, updated_at=now)
        return self.get_node(spec.name)

    def _versioned_update(self, c: Connection, table: Any, where: Any, current: int, expected: int | None,
                          what: str, **values: Any) -> int:
        if expected is not None and expected != current:
            raise Conflict(f"{what} was changed by someone else (resourceVersion {current}, you sent {expected})",
                           hint="read it again and retry your change")
        res = c.execute(update(table).where(and_(where, table.c.resource_version == current))
                        .values(resource_version=current + 1, **values))
        if res.rowcount != 1:
            raise Conflict(f"{what} was changed concurrently", hint="read it again and retry your change")
        return current + 1

    def get_node(self, name: str) -> NodeRecord:
        with self._tx() as c:
            row = c.execute(select(t.nodes).where(t.nodes.c.name == name)).first()
        if row is None:
            raise NotFound(f"node {name!r} does not exist", hint="list nodes with 'modelplane get nodes'")
        return NodeRecord(NodeSpec.model_validate(row.spec), NodeState(row.state), row.last_heartbeat,
                          row.resource_version, row.created_at)

    def list_nodes(self) -> list[NodeRecord]:
        with self._tx() as c:
            rows = c.execute(select(t.nodes).order_by(t.nodes.c.name)).all()
        return [NodeRecord(NodeSpec.model_validate(r.spec), NodeState(r.state), r.last_heartbeat,
                           r.resource_version, r.created_at) for r in rows]

    def set_node_state(self, name: str, state: NodeState, expected_version: int | None = None) -> NodeRecord:
        with self._tx() as c:
            row = c.execute(select(t.nodes).where(t.nodes.c.name == name)).first()
            if row is None:
                raise NotFound(f"node {name!r} does not exist", hint="list nodes with 'modelplane get nodes'")
            if row.state != state.value:
                self._versioned_update(c, t.nodes, t.nodes.c.name == name, row.resource_version,
                                       expected_version, f"node {name!r}", state=state.value,
                                       updated_at=self.clock())
        return self.get_node(name)

    def heartbeat_node(self, name: str) -> NodeRecord:
        """Record a heartbeat; a NotReady node that speaks again becomes Ready."""
        now = self.clock()
        with self._tx() as c:
            row = c.execute(select(t.nodes).where(t.nodes.c.name == name)).first()
            if row is None:
                raise NotFound(f"node {name!r} does not exist", hint="register the node before it sends heartbeats")
            values: dict[str, Any] = {"last_heartbeat": now}
            if row.state == NodeState.NOT_READY.value:
                values["state"] = NodeState.READY.value
                values["updated_at"] = now
                self._versioned_update(c, t.nodes, t.nodes.c.name == name, row.resource_version, None,
                                       f"node {name!r}", **values)
            else:
                c.execute(update(t.nodes).where(t.nodes.c.name == name).values(**values))
        return self.get_node(name)

    def delete_node(self, name: str) -> None:
        with self._tx() as c:
            if c.execute(delete(t.nodes).where(t.nodes.c.name == name)).rowcount == 0:
                raise NotFound(f"node {name!r} does not exist", hint="list nodes with 'modelplane get nodes'")

    # -- queues -----------------------------------------------------------------------------------

    def upsert_queue(self, spec: QueueSpec, expected_version: int | None = None) -> QueueRecord:
        now = self.clock()
        doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        with self._tx() as c:
            row = c.execute(select(t.queues).where(t.queues.c.name == spec.name)).first()
            if row is None:
                c.execute(insert(t.queues).values(name=spec.name, spec=doc, resource_version=1,
                                                  created_at=now, updated_at=now))
            else:
                self._versioned_update(c, t.queues, t.queues.c.name == spec.name, row.resource_version,
                                       expected_version, f"queue {spec.name!r}", spec=doc, updated_at=now)
        return self.get_queue(spec.name)

    def get_queue(self, name: str) -> QueueRecord:
        with self._tx() as c:
            row = c.execute(select(t.queues).where(t.queues.c.name == name)).first()
        if row is None:
            raise NotFound(f"queue {name!r} does not exist",
                           hint="list queues with 'modelplane get queues' or create it in the cluster file")
        return QueueRecord(QueueSpec.model_validate(row.spec), row.resource_version, row.created_at)

    def list_queues(self) -> list[QueueRecord]:
        with self._tx() as c:
            rows = c.execute(select(t.queues).order_by(t.queues.c.name)).all()
        return [QueueRecord(QueueSpec.model_validate(r.spec), r.resource_version, r.created_at) for r in rows]

    def delete_queue(self, name: str) -> None:
        with self._tx() as c:
            busy = c.execute(select(func.count()).select_from(t.jobs).where(
                and_(t.jobs.c.queue == name, t.jobs.c.state.notin_([s.value for s in TERMINAL])))).scalar_one()
            if busy:
                raise Conflict(f"queue {name!r} still has {busy} unfinished job(s)",
                               hint="cancel or wait for them before deleting the queue")
            if c.execute(delete(t.queues).where(t.queues.c.name == name)).rowcount == 0:
                raise NotFound(f"queue {name!r} does not exist", hint="list queues with 'modelplane get queues'")

    # -- jobs -------------------------------------------------------------------------------------

    def create_job(self, doc: dict[str, Any], *, priority: int = 0, request_id: str | None = None) -> JobRecord:
        """Store a validated manifest as a Pending job.

        With ``request_id`` the call is idempotent: a client that retries after a lost answer gets
        the job it created the first time, never a duplicate.
        """
        manifest = parse_manifest(doc)
        if request_id:
            existing = self._job_by_request_id(request_id)
            if existing is not None:
                return existing
        now = self.clock()
        job_id = uuid.uuid4().hex
        values = dict(
            id=job_id, name=manifest.metadata.name, kind=manifest.kind, team=manifest.metadata.team,
            queue=manifest.spec.queue, manifest=doc, state=JobState.PENDING.value, reason="Created",
            message="", restarts=0, max_restarts=manifest.spec.restart_policy.max_restarts,
            priority=priority, placement=None, pending_reason="waiting for the scheduler",
            cancel_requested=False, request_id=request_id, created_at=now, updated_at=now,
            started_at=None, finished_at=None, last_checkpoint_at=None, resource_version=1,
        )
        try:
            with self._tx() as c:
                if c.execute(select(t.queues.c.name).where(t.queues.c.name == manifest.spec.queue)).first() is None:
                    raise NotFound(f"queue {manifest.spec.queue!r} does not exist",
                                   hint="list queues with 'modelplane get queues' or create it in the cluster file",
                                   field="spec.queue")
                c.execute(insert(t.jobs).values(**values))
                c.execute(insert(t.job_events).values(job_id=job_id, time=now, type="Normal", from_state=None,
                                                      to_state=JobState.PENDING.value, reason="Created",
                                                      message=f"{manifest.kind} submitted to queue {manifest.spec.queue}"))
        except IntegrityError:
            if request_id:
                existing = self._job_by_request_id(request_id)
                if existing is not None:
                    return existing
            raise Conflict(f"a job named {manifest.metadata.name!r} already exists",
                           hint="choose another metadata.name, or delete the old job first",
                           field="metadata.name") from None
        return _job_from_row(SimpleNamespace(**values))

    def _job_by_request_id(self, request_id: str) -> JobRecord | None:
        with self._tx() as c:
            row = c.execute(select(t.jobs).where(t.jobs.c.request_id == request_id)).first()
        return _job_from_row(row) if row else None

    def get_job(self, name_or_id: str) -> JobRecord:
        with self._tx() as c:
            row = c.execute(select(t.jobs).where(or_(t.jobs.c.id == name_or_id, t.jobs.c.name == name_or_id))).first()
        if row is None:
            raise NotFound(f"job {name_or_id!r} does not exist", hint="list jobs with 'modelplane get jobs'")
        return _job_from_row(row)

    def list_jobs(self, *, states: Sequence[JobState] | None = None, queue: str | None = None,
                  kind: str | None = None, team: str | None = None, limit: int = 100,
                  after: str | None = None, cancel_requested: bool | None = None,
                  ) -> tuple[list[JobRecord], str | None]:
        """Jobs oldest first; ``after`` is the cursor returned by the previous page."""
        q = select(t.jobs)
        if cancel_requested is not None:
            q = q.where(t.jobs.c.cancel_requested.is_(cancel_requested))
        if states:
            q = q.where(t.jobs.c.state.in_([s.value for s in states]))
        if queue:
            q = q.where(t.jobs.c.queue == queue)
        if kind:
            q = q.where(t.jobs.c.kind == kind)
        if team:
            q = q.where(t.jobs.c.team == team)
        if after:
            try:
                ts, last_id = after.split("|", 1)
                cursor_t = float(ts)
            except ValueError:
                raise InvalidSpec(f"invalid page cursor {after!r}",
                                  hint="pass the 'next' value of the previous page unchanged", field="after") from None
            q = q.where(or_(t.jobs.c.created_at > cursor_t,
                            and_(t.jobs.c.created_at == cursor_t, t.jobs.c.id > last_id)))
        q = q.order_by(t.jobs.c.created_at, t.jobs.c.id).limit(limit + 1)
        with self._tx() as c:
            rows = c.execute(q).all()
        jobs = [_job_from_row(r) for r in rows[:limit]]
        nxt = f"{jobs[-1].created_at!r}|{jobs[-1].id}" if len(rows) > limit and jobs else None
        return jobs, nxt

    def count_jobs(self) -> int:
        with self._tx() as c:
            return int(c.execute(select(func.count()).select_from(t.jobs)).scalar_one())

    def transition_job(self, job_id: str, proposed: JobState, reason: str, message: str = "", *,
                       expected_version: int | None = None, placement: Placement | None = None,
                       clear_placement: bool = False) -> JobRecord:
        """Propose a state change; the state machine decides, and the result and its event are stored
        in one transaction."""
        now = self.clock()
        with self._tx() as c:
            row = c.execute(select(t.jobs).where(t.jobs.c.id == job_id)).first()
            if row is None:
                raise NotFound(f"job {job_id!r} does not exist", hint="list jobs with 'modelplane get jobs'")
            job = _job_from_row(row)
            tr = decide(job.status, proposed, reason, message)
            values: dict[str, Any] = dict(state=tr.to_state.value, reason=tr.reason, message=tr.message,
                                          restarts=tr.status.restarts, updated_at=now)
            if placement is not None:
                values["placement"] = [a.to_dict() for a in placement.assignments]
                values["pending_reason"] = ""
            # A requeued job gives its placement up; a finished one keeps it as history (the scheduler
            # counts only Admitted and Running jobs as holding resources).
            if clear_placement or tr.to_state is JobState.PENDING:
                values["placement"] = None
            if tr.to_state is JobState.RUNNING and job.started_at is None:
                values["started_at"] = now
            if tr.to_state in TERMINAL:
                values["finished_at"] = now
            self._versioned_update(c, t.jobs, t.jobs.c.id == job_id, job.resource_version, expected_version,
                                   f"job {job.name!r}", **values)
            c.execute(insert(t.job_events).values(
                job_id=job_id, time=now, type="Warning" if tr.to_state in (JobState.FAILED, JobState.RECOVERING,
                                                                           JobState.PREEMPTED) else "Normal",
                from_state=tr.from_state.value, to_state=tr.to_state.value, reason=tr.reason, message=tr.message))
        return self.get_job(job_id)

    def update_job_fields(self, job_id: str, *, expected_version: int | None = None, **values: Any) -> JobRecord:
        """Non-state fields: pending_reason, priority, cancel_requested, last_checkpoint_at."""
        allowed = {"pending_reason", "priority", "cancel_requested", "last_checkpoint_at"}
        bad = set(values) - allowed
        if bad:
            raise ValueError(f"update_job_fields cannot set {sorted(bad)}; states change through transition_job")
        with self._tx() as c:
            row = c.execute(select(t.jobs).where(t.jobs.c.id == job_id)).first()
            if row is None:
                raise NotFound(f"job {job_id!r} does not exist", hint="list jobs with 'modelplane get jobs'")
            self._versioned_update(c, t.jobs, t.jobs.c.id == job_id, row.resource_version, expected_version,
                                   f"job {row.name!r}", updated_at=self.clock(), **values)
        return self.get_job(job_id)

    def add_event(self, job_id: str, reason: str, message: str, type: str = "Normal") -> None:
        with self._tx() as c:
            c.execute(insert(t.job_events).values(job_id=job_id, time=self.clock(), type=type, from_state=None,
                                                  to_state=None, reason=reason, message=message))

    def list_events(self, job_id: str) -> list[EventRecord]:
        with self._tx() as c:
            rows = c.execute(select(t.job_events).where(t.job_events.c.job_id == job_id)
                             .order_by(t.job_events.c.id)).all()
        return [EventRecord(r.id, r.job_id, r.time, r.type, r.from_state, r.to_state, r.reason, r.message)
                for r in rows]

    def delete_job(self, job_id: str) -> None:
        with self._tx() as c:
            c.execute(delete(t.tasks).where(t.tasks.c.job_id == job_id))
            c.execute(delete(t.job_events).where(t.job_events.c.job_id == job_id))
            c.execute(delete(t.jobs).where(t.jobs.c.id == job_id))

    # -- tasks ------------------------------------------------------------------------------------

    def put_task(self, job_id: str, rank: int, *, pod_set: str, node: str, phase: str,
                 exit_code: int | None = None, message: str = "", handle: str = "",
                 endpoint: str | None = None) -> None:
        """``endpoint`` None keeps the stored one (a serving task's URL is set once, at launch)."""
        now = self.clock()
        values: dict[str, Any] = dict(pod_set=pod_set, node=node, phase=phase, exit_code=exit_code,
                                      message=message, handle=handle, updated_at=now)
        if endpoint is not None:
            values["endpoint"] = endpoint
        with self._tx() as c:
            res = c.execute(update(t.tasks).where(and_(t.tasks.c.job_id == job_id, t.tasks.c.rank == rank))
                            .values(**values))
            if res.rowcount == 0:
                c.execute(insert(t.tasks).values(job_id=job_id, rank=rank, **values))

    def list_tasks(self, job_id: str) -> list[TaskRecord]:
        with self._tx() as c:
            rows = c.execute(select(t.tasks).where(t.tasks.c.job_id == job_id).order_by(t.tasks.c.rank)).all()
        return [TaskRecord(r.job_id, r.rank, r.pod_set, r.node, r.phase, r.exit_code, r.message, r.handle,
                           r.updated_at, r.endpoint or "") for r in rows]

    def clear_tasks(self, job_id: str) -> None:
        with self._tx() as c:
            c.execute(delete(t.tasks).where(t.tasks.c.job_id == job_id))

    # -- deployments ------------------------------------------------------------------------------

    def create_deployment(self, doc: dict[str, Any]) -> DeploymentRecord:
        """Store an InferenceDeployment manifest; its controller creates the replica jobs."""
        manifest = parse_manifest(doc)
        if manifest.kind != "InferenceDeployment":
            raise InvalidSpec(f"kind {manifest.kind!r} is not a deployment", hint="use kind: InferenceDeployment",
                              field="kind")
        spec: Any = manifest.spec
        now = self.clock()
        values = dict(name=manifest.metadata.name, team=manifest.metadata.team, queue=spec.queue, manifest=doc,
                      desired=int(spec.replicas), status={"phase": "Pending", "ready": 0, "decisions": []},
                      load={}, load_at=None, deleting=False, created_at=now, updated_at=now, resource_version=1)
        try:
            with self._tx() as c:
                if c.execute(select(t.queues.c.name).where(t.queues.c.name == spec.queue)).first() is None:
                    raise NotFound(f"queue {spec.queue!r} does not exist",
                                   hint="list queues with 'modelplane get queues' or create it in the cluster file",
                                   field="spec.queue")
                if c.execute(select(t.jobs.c.id).where(t.jobs.c.name == manifest.metadata.name)).first():
                    raise Conflict(f"a job named {manifest.metadata.name!r} already exists",
                                   hint="choose another metadata.name", field="metadata.name")
                c.execute(insert(t.deployments).values(**values))
        except IntegrityError:
            raise Conflict(f"a deployment named {manifest.metadata.name!r} already exists",
                           hint="choose another metadata.name, or delete the old deployment first",
                           field="metadata.name") from None
        return _deployment_from_row(SimpleNamespace(**values))

    def get_deployment(self, name: str) -> DeploymentRecord:
        with self._tx() as c:
            row = c.execute(select(t.deployments).where(t.deployments.c.name == name)).first()
        if row is None:
            raise NotFound(f"deployment {name!r} does not exist",
                           hint="list deployments with 'modelplane get deployments'")
        return _deployment_from_row(row)

    def list_deployments(self, *, team: str | None = None) -> list[DeploymentRecord]:
        q = select(t.deployments).order_by(t.deployments.c.created_at, t.deployments.c.name)
        if team:
            q = q.where(t.deployments.c.team == team)
        with self._tx() as c:
            rows = c.execute(q).all()
        return [_deployment_from_row(r) for r in rows]

    def update_deployment(self, name: str, *, expected_version: int | None = None, desired: int | None = None,
                          status: dict[str, Any] | None = None, deleting: bool | None = None,
                          manifest: dict[str, Any] | None = None) -> DeploymentRecord:
        """The controller's and the user's writes (versioned); the gateway's load goes through
        ``report_deployment_load``, which never conflicts with them."""
        values: dict[str, Any] = {"updated_at": self.clock()}
        for key, value in (("desired", desired), ("status", status), ("deleting", deleting),
                           ("manifest", manifest)):
            if value is not None:
                values[key] = value
        with self._tx() as c:
            row = c.execute(select(t.deployments).where(t.deployments.c.name == name)).first()
            if row is None:
                raise NotFound(f"deployment {name!r} does not exist",
                               hint="list deployments with 'modelplane get deployments'")
            self._versioned_update(c, t.deployments, t.deployments.c.name == name, row.resource_version,
                                   expected_version, f"deployment {name!r}", **values)
        return self.get_deployment(name)

    def report_deployment_load(self, name: str, load: dict[str, Any]) -> None:
        """The gateway's latest sample (unversioned: last writer wins, a newer sample replaces an older)."""
        with self._tx() as c:
            c.execute(update(t.deployments).where(t.deployments.c.name == name)
                      .values(load=load, load_at=self.clock()))

    def delete_deployment(self, name: str) -> None:
        with self._tx() as c:
            c.execute(delete(t.deployments).where(t.deployments.c.name == name))
