"""core: signed audit checkpoints; clock watch of on-time jobs

Revision ID: core_0004_ckpt
Revises: core_0004_acct
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db
from gmp_mes import ddl

revision = "core_0004_ckpt"
down_revision = "core_0004_acct"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoint",
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("prev", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_audit_checkpoint")),
    )
    op.create_table(
        "clock_watch",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("last_run_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("held_since", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("jump_from", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_clock_watch")),
    )
    # A signed checkpoint is kept as written (Annex 11 §9).
    ddl.append_only("audit_checkpoint")


def downgrade() -> None:
    ddl.drop_guards("audit_checkpoint")
    op.drop_table("clock_watch")
    op.drop_table("audit_checkpoint")
