"""batches: the label scans recorded with a label-check step (every bag of the fill)

Revision ID: batches_0004
Revises: batches_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "batches_0004"
down_revision = "batches_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (not batch mode): SQLite adds it in place, so the append-only
    # triggers of step_record (batches_0001) stay as they are.
    op.add_column("step_record", sa.Column("label_scans", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("step_record", "label_scans")
