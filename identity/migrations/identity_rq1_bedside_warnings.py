"""identity: warnings recorded with a bedside verdict and an administration
(SPEC §6: a MATCH on a conditionally released product names the pending tests)

Revision ID: identity_rq1
Revises: identity_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "identity_rq1"
down_revision = "identity_0001"
branch_labels = None
depends_on = None

TABLES = ("bedside_verification", "administration")


def upgrade() -> None:
    # ADD COLUMN with a constant default: no table rebuild on SQLite (the append-only
    # triggers stay), no row trigger fired on PostgreSQL; existing rows read '[]'.
    for table in TABLES:
        op.add_column(table, sa.Column("warnings", sa.Text(), nullable=False,
                                       server_default="[]"))


def downgrade() -> None:
    # Plain ALTER TABLE (SQLite >= 3.35 and PostgreSQL): a batch rebuild would drop the
    # append-only triggers of these tables.
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} DROP COLUMN warnings")
