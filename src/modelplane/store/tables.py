"""Table definitions. Migrations in ``migrations/versions`` create them; keep both in step."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

nodes = Table(
    "nodes",
    metadata,
    Column("name", String(253), primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("last_heartbeat", Float, nullable=True),
    Column("resource_version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

queues = Table(
    "queues",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("resource_version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("team", String(63), nullable=False),
    Column("queue", String(63), nullable=False),
    Column("manifest", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("restarts", Integer, nullable=False),
    Column("max_restarts", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("placement", JSON, nullable=True),
    Column("pending_reason", Text, nullable=False),
    Column("cancel_requested", Boolean, nullable=False),
    Column("request_id", String(64), nullable=True, unique=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("last_checkpoint_at", Float, nullable=True),
    Column("resource_version", Integer, nullable=False),
    Index("ix_jobs_state", "state"),
    Index("ix_jobs_queue_state", "queue", "state"),
    Index("ix_jobs_created", "created_at", "id"),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("time", Float, nullable=False),
    Column("type", String(16), nullable=False),
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=True),
    Column("reason", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Index("ix_job_events_job", "job_id", "id"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("rank", Integer, primary_key=True),
    Column("pod_set", String(63), nullable=False),
    Column("node", String(253), nullable=False),
    Column("phase", String(16), nullable=False),
    Column("exit_code", Integer, nullable=True),
    Column("message", Text, nullable=False),
    Column("handle", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("endpoint", String(255), nullable=False, server_default=""),  # 0003: a serving task's URL
)

# 0003: an InferenceDeployment is a parent object; its replicas are single-task child jobs.
deployments = Table(
    "deployments",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("team", String(63), nullable=False),
    Column("queue", String(63), nullable=False),
    Column("manifest", JSON, nullable=False),
    Column("desired", Integer, nullable=False),
    Column("status", JSON, nullable=False),  # the controller's: replicas, endpoints, decisions
    Column("load", JSON, nullable=False),  # the gateway's: in flight, waiting, per-replica outstanding
    Column("load_at", Float, nullable=True),
    Column("deleting", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("resource_version", Integer, nullable=False),
)

# Retired: the foundation's bearer tokens, replaced by security/identity (API keys, access tokens).
# Kept because migration 0001 created it; a later migration may drop it.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(63), nullable=False),
    Column("token_hash", String(128), nullable=False, unique=True),
    Column("role", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked", Boolean, nullable=False),
)
