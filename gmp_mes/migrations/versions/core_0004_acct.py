"""core: one-time passwords and password age, revocable tokens and page sessions,
rate-limit counters

Revision ID: core_0004_acct
Revises: core_0004_idem
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db

revision = "core_0004_acct"
down_revision = "core_0004_idem"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild on SQLite: app_user carries delete guards).
    # Existing users chose or were given their passwords before this rule: not one-time.
    op.add_column(
        "app_user",
        sa.Column(
            "must_change_password", sa.Boolean(), nullable=False, server_default=sa.false()
        ),
    )
    op.add_column(
        "app_user",
        sa.Column("password_changed_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
    )
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=10), nullable=False, server_default="token")
        )
        batch_op.add_column(
            sa.Column("revoked_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("revoke_reason", sa.String(length=200), nullable=True))
        batch_op.create_check_constraint(op.f("ck_api_token_kind"), "kind IN ('token', 'session')")
    op.create_table(
        "rate_limit",
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limit")),
    )


def downgrade() -> None:
    op.drop_table("rate_limit")
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_api_token_kind"), type_="check")
        batch_op.drop_column("revoke_reason")
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("kind")
    op.drop_column("app_user", "password_changed_at")
    op.drop_column("app_user", "must_change_password")
