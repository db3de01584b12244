"""Sensitive datasets: the catalog of protected datasets with their wrapped data keys, per-launch job
credentials (hashes) for key release, and each node's latest TEE attestation
(``modelplane.store.sensitive_catalog`` reads and writes them).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sensitive_datasets",
        sa.Column("uri", sa.String(1024), primary_key=True),
        sa.Column("team", sa.String(63), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("wrapped_key", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "job_credentials",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "node_attestations",
        sa.Column("node", sa.String(253), sa.ForeignKey("nodes.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("quote_sha256", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("node_attestations")
    op.drop_table("job_credentials")
    op.drop_table("sensitive_datasets")
