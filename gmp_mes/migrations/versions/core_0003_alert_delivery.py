"""core: alert delivery attempts, users' e-mail addresses

Revision ID: core_0003
Revises: core_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db
from gmp_mes import ddl

revision = "core_0003"
down_revision = "core_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("attempted_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "channel IN ('email', 'webhook')", name=op.f("ck_alert_delivery_channel")
        ),
        sa.CheckConstraint(
            "outcome IN ('sent', 'failed', 'skipped')", name=op.f("ck_alert_delivery_outcome")
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alert.id"], name=op.f("fk_alert_delivery_alert_id_alert")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_delivery")),
        sa.UniqueConstraint(
            "alert_id",
            "channel",
            "attempt",
            name=op.f("uq_alert_delivery_alert_id_channel_attempt"),
        ),
    )
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.create_index("ix_alert_created_at", ["created_at"], unique=False)
    # Plain ADD COLUMN (no table rebuild on SQLite: app_user carries delete guards).
    op.add_column("app_user", sa.Column("email", sa.String(length=254), nullable=True))
    # Every delivery attempt is kept as it happened.
    ddl.append_only("alert_delivery")


def downgrade() -> None:
    ddl.drop_guards("alert_delivery")
    op.drop_column("app_user", "email")
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_created_at")
    op.drop_table("alert_delivery")
