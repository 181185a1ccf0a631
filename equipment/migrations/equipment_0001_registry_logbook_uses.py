"""equipment: the registry, the signed logbook and the use log (issue 17, SPEC §11)

Revision ID: equipment_0001
Revises: core_0005_decimal
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db
from gmp_mes import ddl

revision = "equipment_0001"
down_revision = "core_0005_decimal"
branch_labels = ("equipment",)
depends_on = None

# 21 CFR 211.182, EU GMP Annex 11 §9: the logbook and the use log are written once and
# never changed or deleted; the registry row is never deleted.
APPEND_ONLY = ("equipment_event", "equipment_use")
NEVER_DELETE = ("equipment",)


def upgrade() -> None:
    op.create_table(
        "equipment",
        sa.Column("equipment_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=48), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("site_code", sa.String(length=32), nullable=False),
        sa.Column("calibration_interval", sa.String(length=40), nullable=True),
        sa.Column("cleaning_required", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["app_user.id"],
                                name=op.f("fk_equipment_created_by_app_user")),
        sa.ForeignKeyConstraint(["site_code"], ["site.code"],
                                name=op.f("fk_equipment_site_code_site")),
        sa.PrimaryKeyConstraint("equipment_id", name=op.f("pk_equipment")),
    )
    with op.batch_alter_table("equipment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_equipment_site_code"), ["site_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_equipment_type"), ["type"], unique=False)

    op.create_table(
        "equipment_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("equipment_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("valid_until", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("signature_id", sa.Integer(), nullable=False),
        sa.Column("recorded_by", sa.Integer(), nullable=False),
        sa.Column("recorded_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("(kind = 'calibrated') = (valid_until IS NOT NULL)",
                           name=op.f("ck_equipment_event_valid_until_calibrated")),
        sa.CheckConstraint("kind <> 'out_of_service' OR reason IS NOT NULL",
                           name=op.f("ck_equipment_event_out_of_service_reason")),
        sa.CheckConstraint(
            "kind IN ('calibrated', 'maintained', 'cleaned', 'out_of_service', "
            "'returned_to_service')", name=op.f("ck_equipment_event_kind")),
        sa.ForeignKeyConstraint(["equipment_id"], ["equipment.equipment_id"],
                                name=op.f("fk_equipment_event_equipment_id_equipment")),
        sa.ForeignKeyConstraint(["recorded_by"], ["app_user.id"],
                                name=op.f("fk_equipment_event_recorded_by_app_user")),
        sa.ForeignKeyConstraint(["signature_id"], ["signature.id"],
                                name=op.f("fk_equipment_event_signature_id_signature")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_equipment_event")),
    )
    with op.batch_alter_table("equipment_event", schema=None) as batch_op:
        batch_op.create_index("ix_equipment_event_equipment", ["equipment_id", "id"],
                              unique=False)
        batch_op.create_index("ix_equipment_event_equipment_kind",
                              ["equipment_id", "kind", "id"], unique=False)

    op.create_table(
        "equipment_use",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("equipment_id", sa.String(length=40), nullable=False),
        sa.Column("batch_number", sa.String(length=32), nullable=False),
        sa.Column("coi_id", sa.String(length=20), nullable=False),
        sa.Column("step_record_id", sa.Integer(), nullable=False),
        sa.Column("step_code", sa.String(length=60), nullable=False),
        sa.Column("used_by", sa.Integer(), nullable=False),
        sa.Column("used_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["equipment_id"], ["equipment.equipment_id"],
                                name=op.f("fk_equipment_use_equipment_id_equipment")),
        sa.ForeignKeyConstraint(["used_by"], ["app_user.id"],
                                name=op.f("fk_equipment_use_used_by_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_equipment_use")),
    )
    with op.batch_alter_table("equipment_use", schema=None) as batch_op:
        batch_op.create_index("ix_equipment_use_batch", ["batch_number", "id"], unique=False)
        batch_op.create_index("ix_equipment_use_equipment", ["equipment_id", "id"],
                              unique=False)
        batch_op.create_index("ix_equipment_use_equipment_used_at",
                              ["equipment_id", "used_at"], unique=False)

    for table in APPEND_ONLY:
        ddl.append_only(table)
    for table in NEVER_DELETE:
        ddl.never_delete(table)


def downgrade() -> None:
    for table in (*APPEND_ONLY, *NEVER_DELETE):
        ddl.drop_guards(table)
    op.drop_table("equipment_use")
    op.drop_table("equipment_event")
    op.drop_table("equipment")
