"""materials: the material master, lots (quarantine, release, reject) and lot uses

Revision ID: materials_0001
Revises: core_0005_decimal
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db
from gmp_mes import ddl

revision = "materials_0001"
down_revision = "core_0005_decimal"
branch_labels = ("materials",)
# Lots name the receiving site and users (core); identity's head first, so the recall's
# join with identity's items is made against a settled identity schema.
depends_on = ("identity_audit_trust",)

QUANTITY = sa.Numeric(precision=15, scale=6)


def upgrade() -> None:
    op.create_table(
        "lot_counter",
        sa.Column("name", sa.String(length=20), nullable=False),
        sa.Column("last_value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_lot_counter")),
    )
    op.execute("INSERT INTO lot_counter (name, last_value) VALUES ('lot', 0)")
    op.create_table(
        "material",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("unit", sa.String(length=20), nullable=False),
        sa.Column("storage", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('reagent', 'vector', 'medium', 'consumable', 'excipient')",
                           name=op.f("ck_material_kind")),
        sa.ForeignKeyConstraint(["created_by"], ["app_user.id"],
                                name=op.f("fk_material_created_by_app_user")),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_material")),
    )
    op.create_table(
        "material_lot",
        sa.Column("lot_id", sa.String(length=16), nullable=False),
        sa.Column("material_code", sa.String(length=32), nullable=False),
        sa.Column("supplier", sa.String(length=200), nullable=False),
        sa.Column("supplier_lot", sa.String(length=100), nullable=False),
        sa.Column("expires_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("quantity", QUANTITY, nullable=False),
        sa.Column("remaining", QUANTITY, nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("coa_reference", sa.String(length=200), nullable=True),
        sa.Column("site_code", sa.String(length=32), nullable=True),
        sa.Column("received_by", sa.Integer(), nullable=False),
        sa.Column("received_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        sa.Column("decided_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decision_signature_id", sa.Integer(), nullable=True),
        sa.Column("reject_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('quarantine', 'released', 'rejected')",
                           name=op.f("ck_material_lot_status")),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_material_lot_quantity_positive")),
        # The backstop of the step's row lock: never below zero, never above what came in.
        sa.CheckConstraint("remaining <= quantity",
                           name=op.f("ck_material_lot_remaining_within_quantity")),
        sa.CheckConstraint("remaining >= 0", name=op.f("ck_material_lot_remaining_not_negative")),
        sa.ForeignKeyConstraint(["decided_by"], ["app_user.id"],
                                name=op.f("fk_material_lot_decided_by_app_user")),
        sa.ForeignKeyConstraint(["decision_signature_id"], ["signature.id"],
                                name=op.f("fk_material_lot_decision_signature_id_signature")),
        sa.ForeignKeyConstraint(["material_code"], ["material.code"],
                                name=op.f("fk_material_lot_material_code_material")),
        sa.ForeignKeyConstraint(["received_by"], ["app_user.id"],
                                name=op.f("fk_material_lot_received_by_app_user")),
        sa.ForeignKeyConstraint(["site_code"], ["site.code"],
                                name=op.f("fk_material_lot_site_code_site")),
        sa.PrimaryKeyConstraint("lot_id", name=op.f("pk_material_lot")),
    )
    with op.batch_alter_table("material_lot", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_material_lot_material_code"), ["material_code"],
                              unique=False)
        batch_op.create_index("ix_material_lot_status_expires_at", ["status", "expires_at"],
                              unique=False)
    op.create_table(
        "lot_use",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lot_id", sa.String(length=16), nullable=False),
        sa.Column("material_code", sa.String(length=32), nullable=False),
        sa.Column("batch_number", sa.String(length=40), nullable=False),
        sa.Column("coi_id", sa.String(length=14), nullable=False),
        sa.Column("step_record_id", sa.Integer(), nullable=False),
        sa.Column("step_code", sa.String(length=60), nullable=False),
        sa.Column("quantity", QUANTITY, nullable=False),
        sa.Column("used_by", sa.Integer(), nullable=False),
        sa.Column("used_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_lot_use_quantity_positive")),
        sa.ForeignKeyConstraint(["lot_id"], ["material_lot.lot_id"],
                                name=op.f("fk_lot_use_lot_id_material_lot")),
        sa.ForeignKeyConstraint(["used_by"], ["app_user.id"],
                                name=op.f("fk_lot_use_used_by_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lot_use")),
    )
    with op.batch_alter_table("lot_use", schema=None) as batch_op:
        # The recall reads a lot's uses by batch; the batch record reads a batch's uses.
        batch_op.create_index("ix_lot_use_lot_batch", ["lot_id", "batch_number"], unique=False)
        batch_op.create_index("ix_lot_use_batch", ["batch_number"], unique=False)

    # EU ATMP Regulation Art. 15, 21 CFR 11.10(e): a lot is never deleted (its status
    # changes by QA's signed decision); a use is recorded once and never changed.
    ddl.never_delete("material_lot")
    ddl.never_delete("material")
    ddl.append_only("lot_use")


def downgrade() -> None:
    for table in ("lot_use", "material", "material_lot"):
        ddl.drop_guards(table)
    with op.batch_alter_table("lot_use", schema=None) as batch_op:
        batch_op.drop_index("ix_lot_use_batch")
        batch_op.drop_index("ix_lot_use_lot_batch")
    op.drop_table("lot_use")
    with op.batch_alter_table("material_lot", schema=None) as batch_op:
        batch_op.drop_index("ix_material_lot_status_expires_at")
        batch_op.drop_index(batch_op.f("ix_material_lot_material_code"))
    op.drop_table("material_lot")
    op.drop_table("material")
    op.drop_table("lot_counter")
