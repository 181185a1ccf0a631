"""batches: an index on step_record.supersedes_id (paged step history, issue 15)

Revision ID: batches_0003
Revises: batches_audit_trust
"""

from __future__ import annotations

from alembic import op

revision = "batches_0003"
down_revision = "batches_audit_trust"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # CREATE INDEX changes no table: step_record's append-only triggers stay.
    op.create_index("ix_step_record_supersedes", "step_record", ["supersedes_id"])


def downgrade() -> None:
    op.drop_index("ix_step_record_supersedes", table_name="step_record")
