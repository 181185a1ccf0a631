"""What qc answers through the seams of gmp_mes.registry: the bedside release warnings
(SPEC §6) and the qc sections of the executed batch record."""

from __future__ import annotations

from sqlalchemy.orm import Session

from batches import services as batches
from gmp_mes.errors import (
    NotFound,
)
from gmp_mes.registry import RecordSection
from qc.models import DecisionKind
from qc.schemas import record_qc, record_release
from qc.services._common import (
    _decision,
)
from qc.services.overview import qc_overview
from qc.services.reads import release_decision
from qc.services.states import awaits_final_release


def release_warnings(session: Session, batch_number: str) -> list[dict[str, str]]:
    """What a bedside MATCH must say about the batch's release: a conditionally released
    product names the tests still pending (registered with identity at init_app)."""
    try:
        batch = batches.get_batch(session, batch_number)
    except NotFound:
        return []
    if not awaits_final_release(batch.status):
        return []
    conditional = _decision(session, batch_number, DecisionKind.CONDITIONAL_RELEASE)
    pending = [r.test for r in qc_overview(session, batch_number) if r.pending]
    if pending:
        message = (f"CONDITIONAL RELEASE: {', '.join(pending)} result pending for batch "
                   f"{batch_number}; QA released it before the result")
    else:
        tests = ", ".join(conditional.pending_tests) if conditional else "pending tests"
        message = (f"CONDITIONAL RELEASE: {tests} passed for batch {batch_number}, but QA "
                   "has not yet given the final release")
    if conditional is not None and conditional.justification:
        message += f" (justification: {conditional.justification})"
    return [{"code": "conditional_release", "message": message + "."}]




def batch_record_sections(session: Session, batch_number: str) -> list[RecordSection]:
    """What qc writes into the executed batch record (registry.batch_record_sections)."""
    return [RecordSection("qc", record_qc(qc_overview(session, batch_number))),
            RecordSection("release", record_release(release_decision(session, batch_number)))]
