"""A result after a conditional release (SPEC §5, last paragraph): blocked at once on a
failure, QA told the final release is due once every pending test passed."""

from __future__ import annotations

import json

from sqlalchemy.orm import Session

import identity.services as identity
from batches import services as batches
from gmp_mes.alerts import AlertSpec, raise_alert
from gmp_mes.clock import utcnow
from gmp_mes.errors import (
    NotFound,
)
from qc.models import DecisionKind, ReleaseDecision
from qc.services._common import (
    FINAL_RELEASE_DUE,
    POSITIVE_AFTER_RELEASE,
    _decision,
    _is_treatment,
)
from qc.services.overview import TestRow, qc_overview


def _follow_up_conditional(session: Session, batch_number: str) -> None:
    """A result arrived for a conditionally released batch: a failure of a pending test
    blocks the product at once; when every pending test has passed, QA is told that the
    final release is due (SPEC §5: the release stays conditional until QA signs it)."""
    conditional = _decision(session, batch_number, DecisionKind.CONDITIONAL_RELEASE)
    if conditional is None or _decision(
        session, batch_number, DecisionKind.FAILED_AFTER_RELEASE
    ) is not None:
        return
    overview = qc_overview(session, batch_number)
    # Any failure counts, not only of the tests left pending: a correction may turn a
    # passed result into a failed one while the product is already at the hospital.
    failed = [row for row in overview if row.failed]
    if failed:
        _fail_after_release(session, batch_number, failed)
    elif all(row.passed for row in overview):
        pending = set(conditional.pending_tests)
        _final_release_due(session, batch_number,
                           [r for r in overview if r.test in pending])


def _final_release_due(session: Session, batch_number: str, rows: list[TestRow]) -> None:
    """One alert to QA (every site): the batch waits for its final release."""
    batch = batches.get_batch(session, batch_number)
    passed = ", ".join(f"{r.test} (result {r.current_result_id})" for r in rows)
    raise_alert(session, AlertSpec(
        cause=f"{FINAL_RELEASE_DUE}:{batch_number}", kind=FINAL_RELEASE_DUE,
        severity="warning", subject_type="batch", subject_id=batch_number,
        message=(f"Batch {batch_number} (COI {batch.coi_id}) was released conditionally; "
                 f"the pending results passed: {passed}. The final release by QA is due "
                 "(QA release queue); until then the product stays conditionally released."),
        roles=("qa",),
    ))



def _fail_after_release(session: Session, batch_number: str, rows: list[TestRow]) -> None:
    batch = batches.get_batch(session, batch_number)
    what = ", ".join(f"{r.test} failed (result {r.current_result_id}, specification "
                     f"{r.specification})" for r in rows)
    blocked, administered, sites = [], [], set()
    try:
        treatment_site = identity.get_patient(session, batch.coi_id).treatment_site
    except NotFound:
        treatment_site = None
    if treatment_site:
        sites.add(treatment_site)
    for item_id in batches.final_product_item_ids(session, batch_number):
        item = identity.get_item(session, item_id, for_update=True)
        if item.site_code:
            sites.add(item.site_code)
        if item.status == "administered":
            administered.append(item_id)
        elif identity.can_transition(item, "blocked"):
            identity.transition_item(session, item_id, "blocked",
                                     reason=f"conditional release failed: {what}")
            blocked.append(item_id)
    message = (
        f"Batch {batch_number} (COI {batch.coi_id}) was released conditionally and "
        f"{what}. Blocked: {', '.join(blocked) or 'none'}. ALREADY ADMINISTERED: "
        f"{', '.join(administered) or 'none'} - inform the treating physician at once."
    )
    # One alert for the cause, to QA (every site) and the clinicians of the treating site
    # holding the product: the patient's treatment site plus any treatment site a bag is
    # at. Should bags be at several treatment sites, one alert row cannot name them all:
    # it is then addressed to every site and names the sites in its message.
    treating = {code for code in sites if code == treatment_site or _is_treatment(session, code)}
    sites = treating
    single_site = next(iter(sites)) if len(sites) == 1 else None
    alert = raise_alert(session, AlertSpec(
        cause=f"{POSITIVE_AFTER_RELEASE}:{batch_number}",
        kind=POSITIVE_AFTER_RELEASE, severity="critical", subject_type="batch",
        subject_id=batch_number,
        message=message + (f" Sites holding the product: {', '.join(sorted(sites))}."
                           if len(sites) > 1 else ""),
        roles=("qa", "clinician"), site_code=single_site,
    ))
    session.add(ReleaseDecision(
        batch_number=batch_number, kind=DecisionKind.FAILED_AFTER_RELEASE.value,
        decided_at=utcnow(), reason=what, items_json=json.dumps(blocked),
        administered_json=json.dumps(administered), alert_id=alert.id if alert else None,
    ))
    session.flush()
