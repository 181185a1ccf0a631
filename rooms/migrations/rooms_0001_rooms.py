"""rooms: rooms, the occupancy log, line clearances, EM results and alert limits, the
deviations excursions opened (issue 18, SPEC §12)

Revision ID: rooms_0001
Revises: core_0005_decimal
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db
from gmp_mes import ddl

revision = "rooms_0001"
down_revision = "core_0005_decimal"
branch_labels = ("rooms",)
depends_on = None

# EU GMP Annex 11 §9, Part IV §9.43: the occupancy log, the EM results and the deviations
# they opened are written once; rooms, clearances (verified once) and alert limits (set
# anew) change but are never deleted.
APPEND_ONLY = ("room_use", "em_result", "em_excursion_deviation")
NEVER_DELETE = ("room", "line_clearance", "em_alert_limit")


def upgrade() -> None:
    op.create_table(
        "em_alert_limit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_code", sa.String(length=32), nullable=False),
        sa.Column("grade", sa.String(length=1), nullable=False),
        sa.Column("sample_type", sa.String(length=20), nullable=False),
        sa.Column("alert_limit", sa.Integer(), nullable=False),
        sa.Column("set_by", sa.Integer(), nullable=False),
        sa.Column("set_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("grade IN ('A', 'B', 'C', 'D')", name=op.f("ck_em_alert_limit_grade")),
        sa.CheckConstraint(
            "sample_type IN ('air_active', 'settle_plate', 'contact_plate', 'glove_print')",
            name=op.f("ck_em_alert_limit_sample_type"),
        ),
        sa.CheckConstraint("alert_limit >= 1", name=op.f("ck_em_alert_limit_alert_limit_positive")),
        sa.ForeignKeyConstraint(
            ["set_by"], ["app_user.id"], name=op.f("fk_em_alert_limit_set_by_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["site_code"], ["site.code"], name=op.f("fk_em_alert_limit_site_code_site")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_em_alert_limit")),
        sa.UniqueConstraint(
            "site_code", "grade", "sample_type", name="uq_em_alert_limit_site_grade_type"
        ),
    )
    op.create_table(
        "room",
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("site_code", sa.String(length=32), nullable=False),
        sa.Column("grade", sa.String(length=1), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("grade IN ('A', 'B', 'C', 'D')", name=op.f("ck_room_grade")),
        sa.ForeignKeyConstraint(
            ["created_by"], ["app_user.id"], name=op.f("fk_room_created_by_app_user")
        ),
        sa.ForeignKeyConstraint(["site_code"], ["site.code"], name=op.f("fk_room_site_code_site")),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_room")),
    )
    with op.batch_alter_table("room", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_room_site_code"), ["site_code"], unique=False)

    op.create_table(
        "em_result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("room_code", sa.String(length=40), nullable=False),
        sa.Column("grade", sa.String(length=1), nullable=False),
        sa.Column("sample_type", sa.String(length=20), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("sampled_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("action_limit", sa.Integer(), nullable=True),
        sa.Column("alert_limit", sa.Integer(), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("alert_level", sa.Boolean(), nullable=False),
        sa.Column("signature_id", sa.Integer(), nullable=False),
        sa.Column("recorded_by", sa.Integer(), nullable=False),
        sa.Column("recorded_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("grade IN ('A', 'B', 'C', 'D')", name=op.f("ck_em_result_grade")),
        sa.CheckConstraint(
            "sample_type IN ('air_active', 'settle_plate', 'contact_plate', 'glove_print')",
            name=op.f("ck_em_result_sample_type"),
        ),
        sa.CheckConstraint(
            "NOT alert_level OR (passed AND alert_limit IS NOT NULL AND value >= alert_limit)",
            name=op.f("ck_em_result_alert_level_computed"),
        ),
        sa.CheckConstraint(
            "passed = (action_limit IS NULL OR value <= action_limit)",
            name=op.f("ck_em_result_passed_computed"),
        ),
        sa.CheckConstraint("value >= 0", name=op.f("ck_em_result_value_not_negative")),
        sa.ForeignKeyConstraint(
            ["recorded_by"], ["app_user.id"], name=op.f("fk_em_result_recorded_by_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["room_code"], ["room.code"], name=op.f("fk_em_result_room_code_room")
        ),
        sa.ForeignKeyConstraint(
            ["signature_id"], ["signature.id"], name=op.f("fk_em_result_signature_id_signature")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_em_result")),
    )
    with op.batch_alter_table("em_result", schema=None) as batch_op:
        batch_op.create_index("ix_em_result_passed_sampled", ["passed", "sampled_at"], unique=False)
        batch_op.create_index("ix_em_result_room", ["room_code", "id"], unique=False)
        batch_op.create_index(
            "ix_em_result_room_type_sampled",
            ["room_code", "sample_type", "sampled_at"],
            unique=False,
        )

    op.create_table(
        "room_use",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("room_code", sa.String(length=40), nullable=False),
        sa.Column("batch_number", sa.String(length=32), nullable=False),
        sa.Column("coi_id", sa.String(length=20), nullable=False),
        sa.Column("step_record_id", sa.Integer(), nullable=False),
        sa.Column("step_code", sa.String(length=60), nullable=False),
        sa.Column("clearance_id", sa.Integer(), nullable=True),
        sa.Column("used_by", sa.Integer(), nullable=False),
        sa.Column("at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["room_code"], ["room.code"], name=op.f("fk_room_use_room_code_room")
        ),
        sa.ForeignKeyConstraint(
            ["used_by"], ["app_user.id"], name=op.f("fk_room_use_used_by_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_room_use")),
    )
    with op.batch_alter_table("room_use", schema=None) as batch_op:
        batch_op.create_index("ix_room_use_batch", ["batch_number", "id"], unique=False)
        batch_op.create_index("ix_room_use_room", ["room_code", "id"], unique=False)
        batch_op.create_index("ix_room_use_room_at", ["room_code", "at"], unique=False)

    op.create_table(
        "em_excursion_deviation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("em_result_id", sa.Integer(), nullable=False),
        sa.Column("batch_number", sa.String(length=32), nullable=False),
        sa.Column("deviation_number", sa.String(length=48), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("linked_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["em_result_id"],
            ["em_result.id"],
            name=op.f("fk_em_excursion_deviation_em_result_id_em_result"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_em_excursion_deviation")),
        sa.UniqueConstraint(
            "em_result_id", "batch_number", name="uq_em_excursion_deviation_result_batch"
        ),
    )
    with op.batch_alter_table("em_excursion_deviation", schema=None) as batch_op:
        batch_op.create_index(
            "ix_em_excursion_deviation_batch", ["batch_number", "id"], unique=False
        )

    op.create_table(
        "line_clearance",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("room_code", sa.String(length=40), nullable=False),
        sa.Column("after_use_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("performed_by", sa.Integer(), nullable=False),
        sa.Column("performed_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("performed_signature_id", sa.Integer(), nullable=False),
        sa.Column("verified_by", sa.Integer(), nullable=True),
        sa.Column("verified_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("verified_signature_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "(status = 'verified') = (verified_by IS NOT NULL AND verified_at IS NOT NULL "
            "AND verified_signature_id IS NOT NULL)",
            name=op.f("ck_line_clearance_verified_signed"),
        ),
        sa.CheckConstraint(
            "status IN ('performed', 'verified')", name=op.f("ck_line_clearance_status")
        ),
        sa.CheckConstraint(
            "verified_by IS NULL OR verified_by <> performed_by",
            name=op.f("ck_line_clearance_second_person"),
        ),
        sa.ForeignKeyConstraint(
            ["after_use_id"], ["room_use.id"], name=op.f("fk_line_clearance_after_use_id_room_use")
        ),
        sa.ForeignKeyConstraint(
            ["performed_by"], ["app_user.id"], name=op.f("fk_line_clearance_performed_by_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["performed_signature_id"],
            ["signature.id"],
            name=op.f("fk_line_clearance_performed_signature_id_signature"),
        ),
        sa.ForeignKeyConstraint(
            ["room_code"], ["room.code"], name=op.f("fk_line_clearance_room_code_room")
        ),
        sa.ForeignKeyConstraint(
            ["verified_by"], ["app_user.id"], name=op.f("fk_line_clearance_verified_by_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["verified_signature_id"],
            ["signature.id"],
            name=op.f("fk_line_clearance_verified_signature_id_signature"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_line_clearance")),
    )
    with op.batch_alter_table("line_clearance", schema=None) as batch_op:
        batch_op.create_index("ix_line_clearance_room", ["room_code", "id"], unique=False)

    for table in APPEND_ONLY:
        ddl.append_only(table)
    for table in NEVER_DELETE:
        ddl.never_delete(table)


def downgrade() -> None:
    for table in (*APPEND_ONLY, *NEVER_DELETE):
        ddl.drop_guards(table)
    op.drop_table("line_clearance")
    op.drop_table("em_excursion_deviation")
    op.drop_table("room_use")
    op.drop_table("em_result")
    op.drop_table("room")
    op.drop_table("em_alert_limit")
