"""Serving: the deployments table (parent of replica jobs) and each task's serving endpoint.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("team", sa.String(63), nullable=False),
        sa.Column("queue", sa.String(63), nullable=False),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("desired", sa.Integer, nullable=False),
        sa.Column("status", sa.JSON, nullable=False),
        sa.Column("load", sa.JSON, nullable=False),
        sa.Column("load_at", sa.Float, nullable=True),
        sa.Column("deleting", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("resource_version", sa.Integer, nullable=False),
    )
    with op.batch_alter_table("tasks") as batch:  # batch mode: SQLite cannot ALTER most things in place
        batch.add_column(sa.Column("endpoint", sa.String(255), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("endpoint")
    op.drop_table("deployments")
