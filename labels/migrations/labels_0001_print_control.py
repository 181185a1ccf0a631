"""labels: print control (label_print, label_void)

Revision ID: labels_0001
Revises: core_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db
from gmp_mes import ddl

revision = "labels_0001"
down_revision = "core_0002"
branch_labels = ("labels",)
depends_on = ("identity_0001",)


def upgrade() -> None:
    op.create_table(
        "label_print",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("label_id", sa.String(length=16), nullable=False),
        sa.Column("item_id", sa.String(length=12), nullable=False),
        sa.Column("kind_code", sa.String(length=2), nullable=False),
        sa.Column("coi_id", sa.String(length=14), nullable=False),
        sa.Column("payload_digest", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("copies", sa.Integer(), nullable=False),
        sa.Column("workstation", sa.String(length=100), nullable=True),
        sa.Column("reprint", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("status_banner", sa.String(length=40), nullable=True),
        sa.Column("printed_by", sa.Integer(), nullable=False),
        sa.Column("printed_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "format IN ('png', 'svg', 'pdf', 'zpl')", name=op.f("ck_label_print_format")
        ),
        sa.CheckConstraint("copies BETWEEN 1 AND 100", name=op.f("ck_label_print_copies")),
        sa.CheckConstraint(
            "reprint = false OR reason IS NOT NULL", name=op.f("ck_label_print_reprint_reason")
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.item_id"], name=op.f("fk_label_print_item_id_item")
        ),
        sa.ForeignKeyConstraint(
            ["printed_by"], ["app_user.id"], name=op.f("fk_label_print_printed_by_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_print")),
        sa.UniqueConstraint("label_id", name=op.f("uq_label_print_label_id")),
    )
    with op.batch_alter_table("label_print", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_label_print_item_id"), ["item_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_label_print_payload_digest"), ["payload_digest"], unique=False
        )

    op.create_table(
        "label_void",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("label_id", sa.String(length=16), nullable=False),
        sa.Column("payload_digest", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("voided_by", sa.Integer(), nullable=False),
        sa.Column("voided_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["label_id"], ["label_print.label_id"], name=op.f("fk_label_void_label_id_label_print")
        ),
        sa.ForeignKeyConstraint(
            ["voided_by"], ["app_user.id"], name=op.f("fk_label_void_voided_by_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_void")),
        sa.UniqueConstraint("label_id", name=op.f("uq_label_void_label_id")),
    )
    with op.batch_alter_table("label_void", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_label_void_payload_digest"), ["payload_digest"], unique=False
        )

    # Prints and voids are facts: never overwritten, never deleted (Annex 11 §9).
    ddl.append_only("label_print")
    ddl.append_only("label_void")


def downgrade() -> None:
    ddl.drop_guards("label_void")
    ddl.drop_guards("label_print")
    with op.batch_alter_table("label_void", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_label_void_payload_digest"))
    op.drop_table("label_void")
    with op.batch_alter_table("label_print", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_label_print_payload_digest"))
        batch_op.drop_index(batch_op.f("ix_label_print_item_id"))
    op.drop_table("label_print")
