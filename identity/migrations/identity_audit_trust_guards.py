"""identity: identity fields and statuses of patients and items change only through gmp-mes

Revision ID: identity_audit_trust
Revises: identity_rq1
"""

from __future__ import annotations

from gmp_mes import ddl

revision = "identity_audit_trust"
down_revision = "identity_rq1"
branch_labels = None
depends_on = None

# 21 CFR 11.10(a) / Annex 11 §12.4: who the cells belong to and what state they are in is
# never changed behind the application's back (which audits every change).
PATIENT = ("coi_id", "given_name", "family_name", "date_of_birth", "mrn", "treatment_site")
ITEM = ("coi_id", "kind", "status")


def upgrade() -> None:
    ddl.application_writes_only("patient", PATIENT)
    ddl.application_writes_only("item", ITEM)


def downgrade() -> None:
    ddl.drop_application_writes_only("item")
    ddl.drop_application_writes_only("patient")
