"""Security tables: identities and credentials, versioned Cedar policies, the audit transparency log.

Created from the security library's own SQLAlchemy metadatas (``create_all`` with checkfirst), so
the tables are exactly what ``modelplane.security`` reads and writes. A later change to those tables
needs its own explicit migration (this one records the schema as of revision 0002). The old
``api_tokens`` table stays but is no longer read: credentials are the security library's now.

Revision ID: 0002
Revises: 0001
"""

from alembic import op
from sqlalchemy import insert, select

from modelplane.security.audit import pseudonym as audit_pseudonym
from modelplane.security.audit import sql as audit_sql
from modelplane.security.authz import sql as authz_sql
from modelplane.security.identity import sql as identity_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

METADATAS = (identity_sql.metadata, authz_sql.metadata, audit_sql.metadata, audit_pseudonym.metadata)


def upgrade() -> None:
    bind = op.get_bind()
    for metadata in METADATAS:
        metadata.create_all(bind=bind, checkfirst=True)
    head = audit_sql.head_table
    if bind.execute(select(head.c.size).where(head.c.id == 1)).first() is None:
        bind.execute(insert(head).values(id=1, size=0))


def downgrade() -> None:
    bind = op.get_bind()
    for metadata in reversed(METADATAS):
        metadata.drop_all(bind=bind, checkfirst=True)
