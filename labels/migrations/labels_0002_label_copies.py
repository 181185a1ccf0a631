"""labels: one row per printed copy with its serial, content digest, replaced copy

Revision ID: labels_0002
Revises: labels_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "labels_0002"
down_revision = "labels_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN and CREATE INDEX: no table rebuild on SQLite, so the
    # append-only guards of label_print (labels_0001) stay in place. Rows printed
    # before keep NULL here: they are the 6-field labels, still valid until voided.
    op.add_column("label_print", sa.Column("serial", sa.Integer(), nullable=True))
    op.add_column("label_print", sa.Column("content_digest", sa.String(length=64), nullable=True))
    op.add_column("label_print", sa.Column("replaces", sa.String(length=16), nullable=True))
    op.create_index(
        "ix_label_print_item_id_serial", "label_print", ["item_id", "serial"], unique=True
    )
    op.create_index("ix_label_print_replaces", "label_print", ["replaces"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_label_print_replaces", table_name="label_print")
    op.drop_index("ix_label_print_item_id_serial", table_name="label_print")
    # ALTER TABLE DROP COLUMN (SQLite 3.35+), again without a rebuild.
    for column in ("replaces", "content_digest", "serial"):
        op.drop_column("label_print", column)
