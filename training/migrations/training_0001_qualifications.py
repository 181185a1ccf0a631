"""training: qualifications (training records) and their revocations (issue 18, SPEC §12)

Revision ID: training_0001
Revises: core_0005_decimal
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db
from gmp_mes import ddl

revision = "training_0001"
down_revision = "core_0005_decimal"
branch_labels = ("training",)
depends_on = None

# EU GMP Annex 11 §9, Part IV 3: a training record is written once and never changed or
# deleted (a renewal is a new record); a revocation is its own record, written once.
APPEND_ONLY = ("qualification", "qualification_revocation")


def upgrade() -> None:
    op.create_table(
        "qualification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=48), nullable=False),
        sa.Column("granted_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("valid_until", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("granted_by", sa.Integer(), nullable=False),
        sa.Column("signature_id", sa.Integer(), nullable=False),
        sa.CheckConstraint("valid_until > granted_at",
                           name=op.f("ck_qualification_valid_after_granted")),
        sa.CheckConstraint("granted_by <> user_id",
                           name=op.f("ck_qualification_not_self_granted")),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"],
                                name=op.f("fk_qualification_user_id_app_user")),
        sa.ForeignKeyConstraint(["granted_by"], ["app_user.id"],
                                name=op.f("fk_qualification_granted_by_app_user")),
        sa.ForeignKeyConstraint(["signature_id"], ["signature.id"],
                                name=op.f("fk_qualification_signature_id_signature")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qualification")),
    )
    with op.batch_alter_table("qualification", schema=None) as batch_op:
        batch_op.create_index("ix_qualification_user_code", ["user_id", "code", "id"],
                              unique=False)
        batch_op.create_index("ix_qualification_valid_until", ["valid_until"], unique=False)

    op.create_table(
        "qualification_revocation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("qualification_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("revoked_by", sa.Integer(), nullable=False),
        sa.Column("revoked_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["qualification_id"], ["qualification.id"],
            name=op.f("fk_qualification_revocation_qualification_id_qualification")),
        sa.ForeignKeyConstraint(["revoked_by"], ["app_user.id"],
                                name=op.f("fk_qualification_revocation_revoked_by_app_user")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qualification_revocation")),
        # One revocation per record (two QA users revoking at once: one wins).
        sa.UniqueConstraint("qualification_id",
                            name=op.f("uq_qualification_revocation_qualification_id")),
    )

    for table in APPEND_ONLY:
        ddl.append_only(table)


def downgrade() -> None:
    for table in APPEND_ONLY:
        ddl.drop_guards(table)
    op.drop_table("qualification_revocation")
    op.drop_table("qualification")
