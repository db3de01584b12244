"""The state store: SQLAlchemy 2 over SQLite (embedded default) or PostgreSQL, with Alembic migrations."""

from modelplane.store.repository import EventRecord, JobRecord, NodeRecord, QueueRecord, Store, TaskRecord

__all__ = ["EventRecord", "JobRecord", "NodeRecord", "QueueRecord", "Store", "TaskRecord"]
