"""labels: printed copies of material lot and equipment labels (asset_label_print)

Revision ID: labels_0004
Revises: labels_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gmp_mes import ddl
from gmp_mes.db import UTCDateTime

revision = "labels_0004"
down_revision = "labels_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "asset_label_print",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("label_id", sa.String(length=16), nullable=False),
        sa.Column("kind_code", sa.String(length=3), nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("serial", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("payload_digest", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("workstation", sa.String(length=100), nullable=True),
        sa.Column("reprint", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("printed_by", sa.Integer(), nullable=False),
        sa.Column("printed_at", UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind_code IN ('LOT', 'EQP')",
                           name=op.f("ck_asset_label_print_kind_code")),
        sa.CheckConstraint("format IN ('png', 'svg', 'pdf', 'zpl')",
                           name=op.f("ck_asset_label_print_format")),
        sa.CheckConstraint("serial >= 1", name=op.f("ck_asset_label_print_serial")),
        sa.CheckConstraint("reprint = false OR reason IS NOT NULL",
                           name=op.f("ck_asset_label_print_reprint_reason")),
        sa.ForeignKeyConstraint(["printed_by"], ["app_user.id"],
                                name=op.f("fk_asset_label_print_printed_by_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset_label_print")),
        sa.UniqueConstraint("label_id", name=op.f("uq_asset_label_print_label_id")),
        sa.UniqueConstraint("payload_digest",
                            name=op.f("uq_asset_label_print_payload_digest")),
    )
    op.create_index("ix_asset_label_print_subject_serial", "asset_label_print",
                    ["kind_code", "subject_id", "serial"], unique=True)
    # A printed copy is a fact: never changed, never deleted (21 CFR 11.10(e)).
    ddl.append_only("asset_label_print")


def downgrade() -> None:
    ddl.drop_guards("asset_label_print")
    op.drop_index("ix_asset_label_print_subject_serial", table_name="asset_label_print")
    op.drop_table("asset_label_print")
