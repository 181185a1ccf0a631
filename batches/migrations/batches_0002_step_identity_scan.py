"""batches: the identity scan recorded with a step (the bag scanned at receipt)

Revision ID: batches_0002
Revises: batches_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "batches_0002"
down_revision = "batches_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (not batch mode): SQLite adds it in place, so the append-only
    # triggers of step_record (batches_0001) stay as they are.
    op.add_column("step_record", sa.Column("identity_scan", sa.Text(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN in place (SQLite 3.35+), keeping the triggers too.
    op.drop_column("step_record", "identity_scan")
