"""Rules of the training domain (SPEC §12; EU GMP Part IV 3, 21 CFR 211.25).

Services take a session, enforce every rule, flush and never commit. Other domains call
only the names re-exported here.

- ``records``: grant (signed) and revoke (with a reason) training records, a person's
  records and standing (valid, expired, revoked, none) at a time
- ``step``: the check at a step (``registry.step_requirements`` owner ``qualification``)
- ``matrix``: people x qualifications of a site, what runs out soon
- ``expiry``: the ``qualification_expiring`` warnings the sweep raises
"""

from __future__ import annotations

from training.models import Qualification, QualificationRevocation, RecordStatus
from training.services.expiry import THRESHOLDS, expiry_alerts, running_batch_people
from training.services.matrix import (
    EXPIRING_SOON,
    SOON,
    Cell,
    Expiring,
    Matrix,
    MatrixRow,
    declared_codes,
    expiring_within,
    training_matrix,
)
from training.services.records import (
    EXPIRING,
    GRANT_ROLES,
    NONE,
    PersonRecords,
    RecordView,
    Standing,
    grant_content,
    grant_qualification,
    qualifications_of,
    records_of,
    revoke_qualification,
    standing_of,
)
from training.services.step import NOT_QUALIFIED, check_step_qualification

__all__ = [
    "EXPIRING",
    "EXPIRING_SOON",
    "GRANT_ROLES",
    "NONE",
    "NOT_QUALIFIED",
    "SOON",
    "THRESHOLDS",
    "Cell",
    "Expiring",
    "Matrix",
    "MatrixRow",
    "PersonRecords",
    "Qualification",
    "QualificationRevocation",
    "RecordStatus",
    "RecordView",
    "Standing",
    "check_step_qualification",
    "declared_codes",
    "expiring_within",
    "expiry_alerts",
    "grant_content",
    "grant_qualification",
    "qualifications_of",
    "records_of",
    "revoke_qualification",
    "running_batch_people",
    "standing_of",
    "training_matrix",
]
