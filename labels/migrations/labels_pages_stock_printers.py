"""labels: label stock per site and kind, networked label printers per site

Revision ID: labels_pages
Revises: labels_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "labels_pages"
down_revision = "labels_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "label_stock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_code", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("stock", sa.String(length=8), nullable=False),
        sa.CheckConstraint("stock IN ('2x1', '3x2', '4x2')", name=op.f("ck_label_stock_stock")),
        sa.ForeignKeyConstraint(["site_code"], ["site.code"],
                                name=op.f("fk_label_stock_site_code_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_stock")),
        sa.UniqueConstraint("site_code", "kind", name=op.f("uq_label_stock_site_code_kind")),
    )
    op.create_table(
        "label_printer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("dpi", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.CheckConstraint("dpi IN (203, 300)", name=op.f("ck_label_printer_dpi")),
        sa.CheckConstraint("port BETWEEN 1 AND 65535", name=op.f("ck_label_printer_port")),
        sa.ForeignKeyConstraint(["site_code"], ["site.code"],
                                name=op.f("fk_label_printer_site_code_site")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_printer")),
        sa.UniqueConstraint("site_code", "name", name=op.f("uq_label_printer_site_code_name")),
    )


def downgrade() -> None:
    op.drop_table("label_printer")
    op.drop_table("label_stock")
