"""core: the scheduler's leadership lease

Revision ID: core_edge_faults
Revises: core_0004_ckpt
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "core_edge_faults"
down_revision = "core_0004_ckpt"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Operational state, not a GMP record: which process runs the scheduler and until
    # when (seconds since the epoch by the database's clock). One row, made here, so
    # that taking the lease is always an UPDATE of a locked row.
    lease = op.create_table(
        "scheduler_lease",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("holder", sa.String(length=120), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("renewed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_lease")),
    )
    op.bulk_insert(lease, [{"name": "scheduler", "holder": "", "expires_at": 0.0,
                            "renewed_at": 0.0}])


def downgrade() -> None:
    op.drop_table("scheduler_lease")
