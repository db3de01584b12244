"""Lineage graph store on SQLAlchemy Core: SQLite embedded, PostgreSQL in production.

Nodes are datasets, jobs, models and deployments; an edge ``src -> dst`` means data flowed from
src into dst (a dataset read by a training run, a model served by a deployment). Queries walk the
graph with a recursive CTE whose depth is always bounded: full closures over ~300k nodes take
seconds in every engine (ANCHORS.md, Data), bounded walks take well under a millisecond.

Tables are prefixed ``lineage_`` and live on their own ``MetaData`` so the control-plane store can
include them in its migrations, or this module can create them itself (``create_schema``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    create_engine,
    event,
    func,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import StaticPool

from modelplane.data.errors import DataError, ObjectNotFound

NODE_KINDS = ("source", "dataset", "pipeline", "training", "checkpoint", "model", "deployment")
MAX_DEPTH = 64
MAX_LIMIT = 100_000
# Jobs read the lineage database's URL from this variable (``Settings.lineage_url`` reads it too).
LINEAGE_URL_ENV = "MODELPLANE_LINEAGE_URL"
Direction = Literal["upstream", "downstream"]

metadata = MetaData()

lineage_nodes = Table(
    "lineage_nodes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("namespace", String(255), nullable=False),
    Column("name", String(1024), nullable=False),
    Column("attrs", JSON, nullable=False, default=dict),
    Column("created_ns", BigInteger, nullable=False),
    UniqueConstraint("kind", "namespace", "name", name="uq_lineage_node"),
    # Clients name a node by kind and name alone (the namespace only when ambiguous): without this
    # a lookup scans every node of the kind (~100k models in the benchmark's graph).
    Index("ix_lineage_nodes_name_kind", "name", "kind"),
)

lineage_edges = Table(
    "lineage_edges",
    metadata,
    Column("src", Integer, ForeignKey("lineage_nodes.id", ondelete="CASCADE"), primary_key=True),
    Column("dst", Integer, ForeignKey("lineage_nodes.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Index("ix_lineage_edges_dst_src", "dst", "src"),
)


@dataclass(frozen=True)
class LineageNode:
    id: int
    kind: str
    namespace: str
    name: str
    attrs: dict[str, Any]


@dataclass(frozen=True)
class LineageHit:
    """A node reached by a walk and the fewest hops to it."""

    node: LineageNode
    depth: int


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class LineageStore:
    """Add nodes and edges; walk upstream/downstream with a depth limit; impact queries."""

    def __init__(self, url_or_engine: str | Engine = "sqlite:///lineage.db") -> None:
        if isinstance(url_or_engine, str):
            url = url_or_engine
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            # psycopg prepares a statement after 5 runs and PostgreSQL may then switch to a generic
            # plan that cannot see the start node (seq scans for every walk); plan each query instead.
            connect_args: dict[str, Any] = {"prepare_threshold": None} if url.startswith("postgresql+psycopg") else {}
            if url.startswith("sqlite") and url.split("///", 1)[-1] in ("", ":memory:", "sqlite://"):
                # One in-memory database shared by every thread (the API answers from a thread pool).
                engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
            else:
                engine = create_engine(url, connect_args=connect_args)
        else:
            engine = url_or_engine
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        elif engine.dialect.name != "postgresql":
            raise DataError(f"lineage store on {engine.dialect.name!r} is not supported.", field="url",
                            hint="Use sqlite:///path.db or postgresql://user@host/db.")
        self.engine = engine
        self._walks = {d: self._walk_statement(d) for d in ("upstream", "downstream")}

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    # ---- writes ----------------------------------------------------------------------------------

    def upsert_node(self, kind: str, name: str, namespace: str = "default", attrs: dict[str, Any] | None = None,
                    *, created_ns: int | None = None) -> int:
        """Id of the node (kind, namespace, name), creating it if new (attrs of an existing node kept)."""
        _check_kind(kind)
        row = {"kind": kind, "namespace": namespace, "name": name, "attrs": attrs or {},
               "created_ns": created_ns if created_ns is not None else time.time_ns()}
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(lineage_nodes).values(**row).on_conflict_do_nothing(
            index_elements=["kind", "namespace", "name"])
        with self.engine.begin() as conn:
            conn.execute(stmt)
            found = conn.execute(
                select(lineage_nodes.c.id).where(
                    lineage_nodes.c.kind == kind, lineage_nodes.c.namespace == namespace,
                    lineage_nodes.c.name == name)
            ).scalar_one()
        return int(found)

    def add_edge(self, src: int, dst: int, kind: str = "flows_to") -> None:
        if src == dst:
            raise DataError(f"a lineage edge from node {src} to itself is not allowed.", field="dst")
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(lineage_edges).values(src=src, dst=dst, kind=kind).on_conflict_do_nothing()
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def bulk_load(self, nodes: Sequence[tuple[int, str, str, str]], edges: Iterable[tuple[int, int, str]],
                  *, created_ns: int = 0) -> None:
        """Load (id, kind, namespace, name) nodes and (src, dst, kind) edges fast (COPY on PostgreSQL)."""
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                raw = conn.connection.driver_connection
                assert raw is not None
                with raw.cursor() as cur:
                    with cur.copy("COPY lineage_nodes (id, kind, namespace, name, attrs, created_ns) FROM STDIN") as cp:
                        for nid, kind, ns, name in nodes:
                            cp.write_row((nid, kind, ns, name, "{}", created_ns))
                    with cur.copy("COPY lineage_edges (src, dst, kind) FROM STDIN") as cp:
                        for e in edges:
                            cp.write_row(e)
                    cur.execute("SELECT setval(pg_get_serial_sequence('lineage_nodes','id'), "
                                "(SELECT COALESCE(MAX(id), 1) FROM lineage_nodes))")
                    cur.execute("ANALYZE lineage_nodes")
                    cur.execute("ANALYZE lineage_edges")
            else:
                if nodes:
                    conn.execute(lineage_nodes.insert(), [
                        {"id": nid, "kind": kind, "namespace": ns, "name": name, "attrs": {},
                         "created_ns": created_ns} for nid, kind, ns, name in nodes])
                batch: list[dict[str, Any]] = []
                for src, dst, kind in edges:
                    batch.append({"src": src, "dst": dst, "kind": kind})
                    if len(batch) >= 50_000:
                        conn.execute(lineage_edges.insert(), batch)
                        batch = []
                if batch:
                    conn.execute(lineage_edges.insert(), batch)
                conn.exec_driver_sql("ANALYZE")

    # ---- reads -----------------------------------------------------------------------------------

    def node(self, node_id: int) -> LineageNode:
        with self.engine.connect() as conn:
            row = conn.execute(select(lineage_nodes).where(lineage_nodes.c.id == node_id)).first()
        if row is None:
            raise ObjectNotFound(f"no lineage node with id {node_id}.", field="node")
        return LineageNode(row.id, row.kind, row.namespace, row.name, row.attrs)

    def find(self, kind: str, name: str, namespace: str = "default") -> LineageNode:
        with self.engine.connect() as conn:
            row = conn.execute(select(lineage_nodes).where(
                lineage_nodes.c.kind == kind, lineage_nodes.c.namespace == namespace,
                lineage_nodes.c.name == name)).first()
        if row is None:
            raise ObjectNotFound(f"no {kind} {namespace}/{name} in the lineage graph.", field="name",
                                 hint="Lineage is recorded when pipelines, training runs and deployments run.")
        return LineageNode(row.id, row.kind, row.namespace, row.name, row.attrs)

    def locate(self, kind: str, name: str, namespace: str | None = None) -> LineageNode:
        """The node (kind, name) in ``namespace``, or in whichever one namespace holds that name."""
        _check_kind(kind)
        if namespace is not None:
            return self.find(kind, name, namespace)
        n = lineage_nodes
        with self.engine.connect() as conn:
            rows = conn.execute(select(n).where(n.c.kind == kind, n.c.name == name).order_by(n.c.id).limit(6)).all()
        if not rows:
            raise ObjectNotFound(f"no {kind} named {name!r} in the lineage graph.", field="name",
                                 hint="Search for it with 'modelplane lineage search' or GET /api/v1/lineage/nodes"
                                      "?name=...; lineage is recorded when pipelines, training runs and "
                                      "deployments run.")
        if len(rows) > 1:
            spaces = ", ".join(repr(r.namespace) for r in rows[:5])
            raise DataError(f"{kind} {name!r} exists in several namespaces ({spaces}).", field="namespace",
                            hint="Pass the namespace (--namespace, or ?namespace=) to pick one.")
        r = rows[0]
        return LineageNode(r.id, r.kind, r.namespace, r.name, r.attrs)

    def search(self, *, kind: str | None = None, name: str | None = None, namespace: str | None = None,
               limit: int = 50) -> list[LineageNode]:
        """Nodes whose name (or namespace) contains ``name``, case-insensitively; exact kind/namespace."""
        _check_limit(limit)
        n = lineage_nodes
        stmt = select(n)
        if kind:
            _check_kind(kind)
            stmt = stmt.where(n.c.kind == kind)
        if namespace:
            stmt = stmt.where(n.c.namespace == namespace)
        if name:
            pattern = "%" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            stmt = stmt.where(or_(n.c.name.ilike(pattern, escape="\\"), n.c.namespace.ilike(pattern, escape="\\")))
        stmt = stmt.order_by(n.c.kind, n.c.namespace, n.c.name).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [LineageNode(r.id, r.kind, r.namespace, r.name, r.attrs) for r in rows]

    def edges_among(self, node_ids: Iterable[int]) -> list[tuple[int, int, str]]:
        """Edges whose both ends are in ``node_ids``: what a client needs to draw a walk as a graph."""
        ids = sorted(set(node_ids))
        if not ids:
            return []
        e = lineage_edges
        out: list[tuple[int, int, str]] = []
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 5_000):  # under every engine's bound-parameter limit
                chunk = ids[i:i + 5_000]
                rows = conn.execute(select(e.c.src, e.c.dst, e.c.kind).where(e.c.src.in_(chunk))).all()
                out.extend((r.src, r.dst, r.kind) for r in rows)
        keep = set(ids)
        return sorted(edge for edge in out if edge[1] in keep)

    def _walk_statement(self, direction: Direction) -> Any:
        e = lineage_edges
        start, step = (e.c.dst, e.c.src) if direction == "upstream" else (e.c.src, e.c.dst)
        seed = select(step.label("id"), literal_column("1").label("depth")).where(
            start == bindparam("start", type_=Integer))
        walk = seed.cte("walk", recursive=True)
        nxt = e.c.src if direction == "upstream" else e.c.dst
        joined = e.c.dst if direction == "upstream" else e.c.src
        walk = walk.union(
            select(nxt, walk.c.depth + 1).join_from(walk, e, joined == walk.c.id).where(
                walk.c.depth < bindparam("max_depth", type_=Integer))
        )
        hops = select(walk.c.id, func.min(walk.c.depth).label("depth")).group_by(walk.c.id).subquery()
        n = lineage_nodes
        node: Any
        if self.engine.dialect.name == "postgresql":
            # PostgreSQL cannot estimate a recursive CTE's size and hash-joins it against a scan of
            # every node (~5 ms at 50k nodes). A LATERAL primary-key lookup (LIMIT 1 keeps the
            # planner from flattening it) costs a few microseconds per hit instead.
            node = select(n).where(n.c.id == hops.c.id).limit(1).lateral("node")
            cols = [node.c.id, node.c.kind, node.c.namespace, node.c.name, node.c.attrs, hops.c.depth]
            base = select(*cols).select_from(hops).join(node, true())
        else:
            node = n
            base = select(n.c.id, n.c.kind, n.c.namespace, n.c.name, n.c.attrs, hops.c.depth).join(
                hops, hops.c.id == n.c.id)
        self._kind_col = node.c.kind
        return base.order_by(hops.c.depth, node.c.id).limit(bindparam("limit", type_=Integer))

    def walk(self, node_id: int, direction: Direction, *, depth: int = 5, limit: int = 10_000,
             kind: str | None = None) -> list[LineageHit]:
        """Nodes within ``depth`` hops up- or downstream of ``node_id``, nearest first."""
        if not 1 <= depth <= MAX_DEPTH:
            raise DataError(f"lineage depth {depth} is out of range.", field="depth",
                            hint=f"Use 1..{MAX_DEPTH}; unbounded closures over large graphs take seconds.")
        _check_limit(limit)
        if direction not in self._walks:
            raise DataError(f"unknown direction {direction!r}.", field="direction", hint="upstream or downstream")
        stmt = self._walks[direction]
        if kind is not None:
            _check_kind(kind)
            stmt = stmt.where(self._kind_col == kind)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt, {"start": node_id, "max_depth": depth, "limit": limit}).all()
        return [LineageHit(LineageNode(r.id, r.kind, r.namespace, r.name, r.attrs), r.depth) for r in rows]

    def upstream(self, node_id: int, *, depth: int = 5, limit: int = 10_000) -> list[LineageHit]:
        return self.walk(node_id, "upstream", depth=depth, limit=limit)

    def downstream(self, node_id: int, *, depth: int = 5, limit: int = 10_000) -> list[LineageHit]:
        return self.walk(node_id, "downstream", depth=depth, limit=limit)

    def impact(self, node_id: int, *, kind: str = "deployment", depth: int = 20,
               limit: int = 10_000) -> list[LineageHit]:
        """E.g. which deployments were trained on data from source X: downstream nodes of one kind."""
        return self.walk(node_id, "downstream", depth=depth, limit=limit, kind=kind)


def platform_lineage_url(settings: Any) -> str:
    """Where the platform keeps its lineage graph: ``settings.lineage_url``, else the platform's own
    database (its ``lineage_*`` tables beside the control-plane store's)."""
    return str(settings.lineage_url or settings.resolved_database_url)


def open_platform_lineage(url: str) -> LineageStore:
    """A store on ``url`` with its tables created (idempotent: existing tables are kept)."""
    store = LineageStore(url)
    store.create_schema()
    return store


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise DataError(f"limit {limit} is out of range.", field="limit", hint=f"Use 1..{MAX_LIMIT}.")


def _check_kind(kind: str) -> None:
    if kind not in NODE_KINDS:
        raise DataError(f"unknown lineage node kind {kind!r}.", field="kind", hint=f"Use one of {', '.join(NODE_KINDS)}.")
