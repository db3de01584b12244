"""Versioned Cedar policy sets in SQL: every update is validated, numbered and kept."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table, Text, func, insert, select
from sqlalchemy.exc import IntegrityError

from modelplane.core.errors import Conflict
from modelplane.security.authz.defaults import DEFAULT_POLICIES
from modelplane.security.authz.engine import Authorizer, validate_policies

metadata = MetaData()

policies_table = Table(
    "security_policies",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("text", Text, nullable=False),
    Column("author", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
)

TABLE_NAMES = tuple(metadata.tables)


@dataclass(frozen=True)
class PolicyVersion:
    version: int  # 0 = the built-in default set, never stored
    text: str
    author: str
    created_at: float


class PolicyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cached: Authorizer | None = None
        metadata.create_all(engine)

    def current_version(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(select(func.coalesce(func.max(policies_table.c.version), 0))).scalar_one()
            )

    def current(self) -> PolicyVersion:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(policies_table).order_by(policies_table.c.version.desc()).limit(1)
            ).first()
        if row is None:
            return PolicyVersion(0, DEFAULT_POLICIES, "built-in", 0.0)
        return PolicyVersion(row.version, row.text, row.author, row.created_at)

    def get(self, version: int) -> PolicyVersion:
        if version == 0:
            return PolicyVersion(0, DEFAULT_POLICIES, "built-in", 0.0)
        with self.engine.connect() as conn:
            row = conn.execute(select(policies_table).where(policies_table.c.version == version)).first()
        if row is None:
            from modelplane.core.errors import NotFound

            raise NotFound(f"policy version {version} does not exist")
        return PolicyVersion(row.version, row.text, row.author, row.created_at)

    def history(self) -> list[PolicyVersion]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(policies_table).order_by(policies_table.c.version)).all()
        return [PolicyVersion(r.version, r.text, r.author, r.created_at) for r in rows]

    def update(self, text: str, *, author: str, now: float, expected_version: int) -> PolicyVersion:
        """Validate, then store as ``expected_version + 1``; a stale ``expected_version`` is a Conflict."""
        validate_policies(text)
        current = self.current().version
        if current != expected_version:
            raise Conflict(
                f"policy set is at version {current}, not {expected_version}",
                hint="re-read the current policies and apply your change on top",
            )
        new = PolicyVersion(current + 1, text, author, now)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(policies_table).values(
                        version=new.version, text=text, author=author, created_at=now
                    )
                )
        except IntegrityError as exc:
            raise Conflict("policy set changed concurrently", hint="re-read and retry") from exc
        return new

    def authorizer(self, **kwargs: int) -> Authorizer:
        """The authorizer for the newest version; re-parsed only when the version changed."""
        if kwargs:
            cur = self.current()
            return Authorizer(cur.text, version=cur.version, **kwargs)
        cached = self._cached
        if cached is None or cached.version != self.current_version():
            cur = self.current()
            cached = self._cached = Authorizer(cur.text, version=cur.version)
        return cached
