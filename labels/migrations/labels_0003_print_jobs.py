"""labels: the outbox of prints sent to networked printers (pending, printed, failed)

Revision ID: labels_0003
Revises: labels_pages
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gmp_mes import ddl
from gmp_mes.db import UTCDateTime

revision = "labels_0003"
down_revision = "labels_pages"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "label_print_job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=16), nullable=False),
        sa.Column("item_id", sa.String(length=12), nullable=False),
        sa.Column("printer", sa.String(length=60), nullable=False),
        sa.Column("address", sa.String(length=262), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("first_serial", sa.Integer(), nullable=False),
        sa.Column("copies", sa.Integer(), nullable=False),
        sa.Column("reprint", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.Integer(), nullable=False),
        sa.Column("requested_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'printed', 'failed')",
                           name=op.f("ck_label_print_job_status")),
        sa.CheckConstraint("copies BETWEEN 1 AND 100", name=op.f("ck_label_print_job_copies")),
        sa.ForeignKeyConstraint(["item_id"], ["item.item_id"],
                                name=op.f("fk_label_print_job_item_id_item")),
        sa.ForeignKeyConstraint(["requested_by"], ["app_user.id"],
                                name=op.f("fk_label_print_job_requested_by_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_print_job")),
        sa.UniqueConstraint("job_id", name=op.f("uq_label_print_job_job_id")),
    )
    op.create_index("ix_label_print_job_item_id_status", "label_print_job",
                    ["item_id", "status"], unique=False)
    # A job changes status once (pending -> printed or failed) and is never deleted.
    ddl.never_delete("label_print_job")


def downgrade() -> None:
    ddl.drop_guards("label_print_job")
    op.drop_index("ix_label_print_job_item_id_status", table_name="label_print_job")
    op.drop_table("label_print_job")
