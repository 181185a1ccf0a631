"""batches: a batch's identity and status change only through gmp-mes

Revision ID: batches_audit_trust
Revises: batches_0002
"""

from __future__ import annotations

from gmp_mes import ddl

revision = "batches_audit_trust"
down_revision = "batches_0002"
branch_labels = None
depends_on = None

# 21 CFR 11.10(a) / Annex 11 §12.4: a batch's status (released, rejected ...) and whose
# cells it holds change only through the application, which audits every change.
BATCH = ("batch_number", "coi_id", "status")


def upgrade() -> None:
    ddl.application_writes_only("batch", BATCH)


def downgrade() -> None:
    ddl.drop_application_writes_only("batch")
