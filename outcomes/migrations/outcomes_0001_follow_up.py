"""outcomes: the follow-up schedule and the signed follow-up records (issue 21, SPEC §16)

Revision ID: outcomes_0001
Revises: core_0005_decimal
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db
from gmp_mes import ddl

revision = "outcomes_0001"
down_revision = "core_0005_decimal"
branch_labels = ("outcomes",)
depends_on = ("identity_audit_trust", "batches_0005", "qc_0001")

# 21 CFR 11.10(e), EU GMP Annex 11 §9: a visit's due time is fixed at the administration
# and a follow-up record is written once; a correction is a new version, never an edit.
APPEND_ONLY = ("follow_up_visit", "follow_up_record")


def upgrade() -> None:
    op.create_table(
        "follow_up_visit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("coi_id", sa.String(length=14), nullable=False),
        sa.Column("batch_number", sa.String(length=32), nullable=False),
        sa.Column("item_id", sa.String(length=12), nullable=False),
        sa.Column("visit", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("administered_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("due_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("overdue_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("site_code", sa.String(length=32), nullable=False),
        sa.Column("process_code", sa.String(length=32), nullable=False),
        sa.Column("process_version", sa.Integer(), nullable=False),
        sa.Column("scheduled_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("overdue_at > due_at", name=op.f("ck_follow_up_visit_window")),
        sa.ForeignKeyConstraint(["batch_number"], ["batch.batch_number"],
                                name=op.f("fk_follow_up_visit_batch_number_batch")),
        sa.ForeignKeyConstraint(["coi_id"], ["patient.coi_id"],
                                name=op.f("fk_follow_up_visit_coi_id_patient")),
        sa.ForeignKeyConstraint(["item_id"], ["item.item_id"],
                                name=op.f("fk_follow_up_visit_item_id_item")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_follow_up_visit")),
        sa.UniqueConstraint("batch_number", "visit", name="uq_follow_up_visit_batch_visit"),
    )
    with op.batch_alter_table("follow_up_visit", schema=None) as batch_op:
        batch_op.create_index("ix_follow_up_visit_coi_id", ["coi_id"], unique=False)
        batch_op.create_index("ix_follow_up_visit_overdue_at", ["overdue_at"], unique=False)

    op.create_table(
        "follow_up_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("visit_id", sa.Integer(), nullable=False),
        sa.Column("coi_id", sa.String(length=14), nullable=False),
        sa.Column("batch_number", sa.String(length=32), nullable=False),
        sa.Column("visit", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("supersedes_id", sa.Integer(), nullable=True),
        sa.Column("correction_reason", sa.Text(), nullable=True),
        sa.Column("assessed_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("response", sa.String(length=2), nullable=False),
        sa.Column("crs", sa.Text(), nullable=True),
        sa.Column("icans", sa.Text(), nullable=True),
        sa.Column("crs_grade", sa.Integer(), nullable=True),
        sa.Column("icans_grade", sa.Integer(), nullable=True),
        sa.Column("alive", sa.Boolean(), nullable=False),
        sa.Column("death_date", sa.Date(), nullable=True),
        sa.Column("recorded_by", sa.Integer(), nullable=False),
        sa.Column("recorded_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("signature_id", sa.Integer(), nullable=False),
        sa.CheckConstraint("response IN ('CR', 'PR', 'SD', 'PD', 'NE')",
                           name=op.f("ck_follow_up_record_response")),
        sa.CheckConstraint("crs_grade IS NULL OR (crs_grade >= 0 AND crs_grade <= 4)",
                           name=op.f("ck_follow_up_record_crs_grade")),
        sa.CheckConstraint("icans_grade IS NULL OR (icans_grade >= 0 AND icans_grade <= 4)",
                           name=op.f("ck_follow_up_record_icans_grade")),
        sa.CheckConstraint("(crs IS NULL) = (crs_grade IS NULL)",
                           name=op.f("ck_follow_up_record_crs_graded")),
        sa.CheckConstraint("(icans IS NULL) = (icans_grade IS NULL)",
                           name=op.f("ck_follow_up_record_icans_graded")),
        sa.CheckConstraint("(death_date IS NULL) = alive",
                           name=op.f("ck_follow_up_record_death_date")),
        sa.CheckConstraint("(version = 1) = (supersedes_id IS NULL)",
                           name=op.f("ck_follow_up_record_version_chain")),
        sa.ForeignKeyConstraint(["recorded_by"], ["app_user.id"],
                                name=op.f("fk_follow_up_record_recorded_by_app_user")),
        sa.ForeignKeyConstraint(["signature_id"], ["signature.id"],
                                name=op.f("fk_follow_up_record_signature_id_signature")),
        sa.ForeignKeyConstraint(["supersedes_id"], ["follow_up_record.id"],
                                name=op.f("fk_follow_up_record_supersedes_id_follow_up_record")),
        sa.ForeignKeyConstraint(["visit_id"], ["follow_up_visit.id"],
                                name=op.f("fk_follow_up_record_visit_id_follow_up_visit")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_follow_up_record")),
        sa.UniqueConstraint("supersedes_id", name="uq_follow_up_record_supersedes"),
        sa.UniqueConstraint("visit_id", "version", name="uq_follow_up_record_visit_version"),
    )
    with op.batch_alter_table("follow_up_record", schema=None) as batch_op:
        batch_op.create_index("ix_follow_up_record_coi_id", ["coi_id"], unique=False)
    for table in APPEND_ONLY:
        ddl.append_only(table)


def downgrade() -> None:
    for table in APPEND_ONLY:
        ddl.drop_guards(table)
    op.drop_table("follow_up_record")
    op.drop_table("follow_up_visit")
