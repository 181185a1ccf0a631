"""qc: QC results (versions, reviews, invalidations) and release decisions

Revision ID: qc_0001
Revises: core_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db
from gmp_mes import ddl

revision = "qc_0001"
down_revision = "core_0002"
branch_labels = ("qc",)
depends_on = ("batches_0001", "identity_0001")

# 21 CFR 11.10(e), EU GMP Annex 11 §9: QC results, their reviews and invalidations and
# every release decision are recorded once and never changed or deleted (a correction
# is a new version, a decision a new row).
APPEND_ONLY = ("qc_result", "qc_review", "qc_invalidation", "release_decision")


def upgrade() -> None:
    op.create_table(
        "qc_result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_number", sa.String(length=32), nullable=False),
        sa.Column("coi_id", sa.String(length=20), nullable=False),
        sa.Column("test", sa.String(length=60), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("supersedes_id", sa.Integer(), nullable=True),
        sa.Column("correction_reason", sa.Text(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(length=60), nullable=True),
        sa.Column("unit", sa.String(length=40), nullable=True),
        sa.Column("method", sa.String(length=200), nullable=True),
        sa.Column("specification", sa.String(length=200), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("sample_item_id", sa.String(length=12), nullable=True),
        sa.Column("recorded_by", sa.Integer(), nullable=False),
        sa.Column("recorded_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("signature_id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "(value IS NULL) <> (outcome IS NULL)", name=op.f("ck_qc_result_value_or_outcome")
        ),
        sa.ForeignKeyConstraint(
            ["batch_number"], ["batch.batch_number"], name=op.f("fk_qc_result_batch_number_batch")
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by"], ["app_user.id"], name=op.f("fk_qc_result_recorded_by_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["sample_item_id"], ["item.item_id"], name=op.f("fk_qc_result_sample_item_id_item")
        ),
        sa.ForeignKeyConstraint(
            ["signature_id"], ["signature.id"], name=op.f("fk_qc_result_signature_id_signature")
        ),
        sa.ForeignKeyConstraint(
            ["supersedes_id"], ["qc_result.id"], name=op.f("fk_qc_result_supersedes_id_qc_result")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qc_result")),
        sa.UniqueConstraint("supersedes_id", name="uq_qc_result_supersedes"),
    )
    with op.batch_alter_table("qc_result", schema=None) as batch_op:
        batch_op.create_index("ix_qc_result_batch_test", ["batch_number", "test"], unique=False)

    op.create_table(
        "release_decision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_number", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("decided_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        sa.Column("signature_id", sa.Integer(), nullable=True),
        sa.Column("justification", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("pending_tests_json", sa.Text(), nullable=False),
        sa.Column("items_json", sa.Text(), nullable=False),
        sa.Column("administered_json", sa.Text(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('release', 'conditional_release', 'final_release', "
            "'failed_after_release', 'reject')",
            name=op.f("ck_release_decision_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alert.id"], name=op.f("fk_release_decision_alert_id_alert")
        ),
        sa.ForeignKeyConstraint(
            ["batch_number"],
            ["batch.batch_number"],
            name=op.f("fk_release_decision_batch_number_batch"),
        ),
        sa.ForeignKeyConstraint(
            ["decided_by"], ["app_user.id"], name=op.f("fk_release_decision_decided_by_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["signature_id"],
            ["signature.id"],
            name=op.f("fk_release_decision_signature_id_signature"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_release_decision")),
        sa.UniqueConstraint("batch_number", "kind", name="uq_release_decision_batch_kind"),
    )
    with op.batch_alter_table("release_decision", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_release_decision_batch_number"), ["batch_number"], unique=False
        )

    op.create_table(
        "qc_invalidation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("invalidated_by", sa.Integer(), nullable=False),
        sa.Column("invalidated_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("signature_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invalidated_by"],
            ["app_user.id"],
            name=op.f("fk_qc_invalidation_invalidated_by_app_user"),
        ),
        sa.ForeignKeyConstraint(
            ["result_id"], ["qc_result.id"], name=op.f("fk_qc_invalidation_result_id_qc_result")
        ),
        sa.ForeignKeyConstraint(
            ["signature_id"],
            ["signature.id"],
            name=op.f("fk_qc_invalidation_signature_id_signature"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qc_invalidation")),
        sa.UniqueConstraint("result_id", name=op.f("uq_qc_invalidation_result_id")),
    )
    op.create_table(
        "qc_review",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("reviewed_by", sa.Integer(), nullable=False),
        sa.Column("reviewed_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("signature_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["result_id"], ["qc_result.id"], name=op.f("fk_qc_review_result_id_qc_result")
        ),
        sa.ForeignKeyConstraint(
            ["reviewed_by"], ["app_user.id"], name=op.f("fk_qc_review_reviewed_by_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["signature_id"], ["signature.id"], name=op.f("fk_qc_review_signature_id_signature")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qc_review")),
        sa.UniqueConstraint("result_id", name=op.f("uq_qc_review_result_id")),
    )
    for table in APPEND_ONLY:
        ddl.append_only(table)


def downgrade() -> None:
    for table in APPEND_ONLY:
        ddl.drop_guards(table)
    op.drop_table("qc_review")
    op.drop_table("qc_invalidation")
    with op.batch_alter_table("release_decision", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_release_decision_batch_number"))

    op.drop_table("release_decision")
    with op.batch_alter_table("qc_result", schema=None) as batch_op:
        batch_op.drop_index("ix_qc_result_batch_test")

    op.drop_table("qc_result")
