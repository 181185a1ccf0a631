"""logistics: storage units and the placements of items in their positions (SPEC §14)

Revision ID: logistics_0002
Revises: logistics_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db
from gmp_mes import ddl

revision = "logistics_0002"
down_revision = "logistics_0001"
branch_labels = None
depends_on = None

# EU GMP Part IV 6.5: where an item was stored, from when to when, is kept.
NEVER_DELETE = ("storage_unit", "storage_placement")


def upgrade() -> None:
    op.create_table(
        "storage_unit",
        sa.Column("code", sa.String(length=80), nullable=False),
        sa.Column("site_code", sa.String(length=32), nullable=False),
        sa.Column("positions", sa.Integer(), nullable=False),
        sa.Column("min_c", sa.Float(), nullable=False),
        sa.Column("max_c", sa.Float(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("min_c < max_c", name=op.f("ck_storage_unit_condition_range")),
        sa.CheckConstraint("positions > 0", name=op.f("ck_storage_unit_positions_positive")),
        sa.ForeignKeyConstraint(
            ["created_by"], ["app_user.id"], name=op.f("fk_storage_unit_created_by_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["site_code"], ["site.code"], name=op.f("fk_storage_unit_site_code_site")
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_storage_unit")),
    )
    with op.batch_alter_table("storage_unit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_storage_unit_site_code"), ["site_code"], unique=False)

    op.create_table(
        "storage_placement",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("unit_code", sa.String(length=80), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(length=12), nullable=False),
        sa.Column("placed_by", sa.Integer(), nullable=True),
        sa.Column("placed_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("removed_by", sa.Integer(), nullable=True),
        sa.Column("removed_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("position > 0", name=op.f("ck_storage_placement_position_positive")),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.item_id"], name=op.f("fk_storage_placement_item_id_item")
        ),
        sa.ForeignKeyConstraint(
            ["placed_by"], ["app_user.id"], name=op.f("fk_storage_placement_placed_by_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["removed_by"], ["app_user.id"], name=op.f("fk_storage_placement_removed_by_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["unit_code"],
            ["storage_unit.code"],
            name=op.f("fk_storage_placement_unit_code_storage_unit"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_storage_placement")),
    )
    with op.batch_alter_table("storage_placement", schema=None) as batch_op:
        batch_op.create_index(
            "uq_storage_placement_open_item",
            ["item_id"],
            unique=True,
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )
        batch_op.create_index(
            "uq_storage_placement_open_position",
            ["unit_code", "position"],
            unique=True,
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )

    for table in NEVER_DELETE:
        ddl.never_delete(table)


def downgrade() -> None:
    for table in NEVER_DELETE:
        ddl.drop_guards(table)
    with op.batch_alter_table("storage_placement", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_storage_placement_open_position",
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )
        batch_op.drop_index(
            "uq_storage_placement_open_item",
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )

    op.drop_table("storage_placement")
    with op.batch_alter_table("storage_unit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_storage_unit_site_code"))

    op.drop_table("storage_unit")
