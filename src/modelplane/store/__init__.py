"""The state store: SQLAlchemy 2 over SQLite (embedded default) or PostgreSQL, with Alembic migrations."""

from modelplane.store.repository import (
    DeploymentRecord,
    EventRecord,
    JobRecord,
    NodeRecord,
    QueueRecord,
    Store,
    TaskRecord,
)

__all__ = ["DeploymentRecord", "EventRecord", "JobRecord", "NodeRecord", "QueueRecord", "Store", "TaskRecord"]
