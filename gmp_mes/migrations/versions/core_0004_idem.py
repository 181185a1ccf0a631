"""core: idempotency keys of API POSTs (SPEC §7)

Revision ID: core_0004_idem
Revises: core_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db

revision = "core_0004_idem"
down_revision = "core_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("content_type", sa.String(length=100), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("created_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_idempotency_key_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_key")),
    )
    op.create_index(
        "uq_idempotency_key_user_id_key", "idempotency_key", ["user_id", "key"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_idempotency_key_user_id_key", table_name="idempotency_key")
    op.drop_table("idempotency_key")
