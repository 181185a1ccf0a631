"""batches: what the step used (lots, equipment), as its requirement checks signed it

Revision ID: batches_0005
Revises: batches_0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "batches_0005"
down_revision = "batches_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (not batch mode): SQLite adds it in place, so the append-only
    # triggers of step_record (batches_0001) stay as they are.
    op.add_column("step_record", sa.Column("resources", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("step_record", "resources")
