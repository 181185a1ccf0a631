"""outcomes: signed outcome-agreement statements (issue 21)

Revision ID: outcomes_0002
Revises: outcomes_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db
from gmp_mes import ddl

revision = "outcomes_0002"
down_revision = "outcomes_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agreement_statement",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agreement_code", sa.String(length=40), nullable=False),
        sa.Column("agreement_version", sa.Integer(), nullable=False),
        sa.Column("coi_id", sa.String(length=14), nullable=False),
        sa.Column("batch_number", sa.String(length=32), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_digest", sa.String(length=64), nullable=False),
        sa.Column("issued_by", sa.Integer(), nullable=False),
        sa.Column("issued_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("signature_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["coi_id"], ["patient.coi_id"],
                                name=op.f("fk_agreement_statement_coi_id_patient")),
        sa.ForeignKeyConstraint(["issued_by"], ["app_user.id"],
                                name=op.f("fk_agreement_statement_issued_by_app_user")),
        sa.ForeignKeyConstraint(["signature_id"], ["signature.id"],
                                name=op.f("fk_agreement_statement_signature_id_signature")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agreement_statement")),
    )
    with op.batch_alter_table("agreement_statement", schema=None) as batch_op:
        batch_op.create_index("ix_agreement_statement_coi_id", ["coi_id"], unique=False)
    # 21 CFR 11.70: what was signed and sent to the payer is never changed.
    ddl.append_only("agreement_statement")


def downgrade() -> None:
    ddl.drop_guards("agreement_statement")
    op.drop_table("agreement_statement")
