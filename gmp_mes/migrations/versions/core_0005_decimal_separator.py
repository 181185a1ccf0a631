"""core: each site's decimal separator for page forms (issue 15)

Revision ID: core_0005_decimal
Revises: core_edge_faults
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "core_0005_decimal"
down_revision = "core_edge_faults"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing sites write a decimal point, as every form read them before. A plain
    # ADD COLUMN on both databases (the site table is never rebuilt): SQLite cannot add a
    # constraint afterwards, so there the CHECK is written inline with the column.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE site ADD COLUMN decimal_separator VARCHAR(1) DEFAULT '.' "
                   "NOT NULL CONSTRAINT ck_site_decimal_separator "
                   "CHECK (decimal_separator IN ('.', ','))")
        return
    op.add_column("site", sa.Column(
        "decimal_separator", sa.String(length=1), nullable=False, server_default=".",
    ))
    op.create_check_constraint(op.f("ck_site_decimal_separator"), "site",
                               "decimal_separator IN ('.', ',')")


def downgrade() -> None:
    # SQLite drops the column with its inline CHECK only by rebuilding the table, which
    # would lose the guard triggers: the downgrade is for PostgreSQL.
    op.drop_constraint(op.f("ck_site_decimal_separator"), "site", type_="check")
    op.drop_column("site", "decimal_separator")
