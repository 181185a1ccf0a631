"""QA release (SPEC §5): the release conditions, release, final release and rejection."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

import identity.services as identity
from batches import services as batches
from gmp_mes.alerts import Alert, AlertSpec, AlertStatus, acknowledge, raise_alert
from gmp_mes.clock import utcnow
from gmp_mes.errors import (
    InvalidTransition,
    SegregationOfDuties,
    conflict,
    field_error,
)
from gmp_mes.models import Meaning, User
from gmp_mes.signatures import SignatureInput, sign
from qc.models import DecisionKind, ReleaseDecision
from qc.services._common import (
    CONDITIONAL_RELEASE_GIVEN,
    FINAL_RELEASE_DUE,
    FINAL_RELEASE_GIVEN,
    RELEASE_GIVEN,
    _decision,
    _states,
    _treating_site,
    _user,
)
from qc.services.overview import TestRow, qc_overview
from qc.services.states import (
    CONDITIONALLY_RELEASED,
    RELEASABLE_ITEM,
    awaits_final_release,
    decided,
    may_reject,
)

if TYPE_CHECKING:
    from batches.models import Batch


def _qc_people(session: Session, batch_number: str) -> set[int]:
    """Everyone who recorded, signed, reviewed or invalidated a QC result of the batch."""
    states = _states(session, batch_number)
    people: set[int] = set()
    for state in states.values():
        for result in state.results:
            people.update({result.recorded_by, result.signature.user_id})
        people.update(r.reviewed_by for r in state.reviews.values())
        people.update(i.invalidated_by for i in state.invalid.values())
    return people


def _qc_problems(
    overview: list[TestRow], *, conditional: bool
) -> tuple[list[tuple[str, str]], list[str]]:
    """QC conditions of SPEC §5.2: problems, and the tests a conditional release may leave
    pending (release_before_result)."""
    incomplete, failed, pending_allowed = [], [], []
    for row in overview:
        if row.failed:
            failed.append(f"{row.test} failed (specification {row.specification})")
        elif row.pending:
            if row.release_before_result and conditional:
                pending_allowed.append(row.test)
            elif row.release_before_result:
                incomplete.append(f"{row.test} has no result (a conditional release with "
                                  "a written justification may leave it pending)")
            else:
                incomplete.append(f"{row.test} has no result")
    problems = []
    if incomplete:
        problems.append(("qc_incomplete", "QC incomplete: " + "; ".join(incomplete)))
    if failed:
        problems.append(("qc_failed", "QC out of specification: " + "; ".join(failed)))
    return problems, pending_allowed


def _order(problems: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    # The order of SPEC §5: steps, QC, deviations, expiry.
    rank = {"steps_incomplete": 0, "qc_incomplete": 1, "qc_failed": 2, "open_deviation": 3,
            "expired": 4}
    return sorted(problems, key=lambda p: rank.get(p[0], 9))


def release_problems(
    session: Session, batch_number: str, *, conditional: bool = False,
    overview: list[TestRow] | None = None,
    blockers: list[tuple[str, str]] | None = None,
) -> list[tuple[str, str]]:
    """Every unmet release condition of SPEC §5 (1, 2, 3 and 5), as (code, message)."""
    overview = qc_overview(session, batch_number) if overview is None else overview
    qc_problems, _ = _qc_problems(overview, conditional=conditional)
    if blockers is None:
        blockers = batches.release_blockers(session, batch_number)
    return _order([*blockers, *qc_problems])


class ReleaseRefused(InvalidTransition):
    """409 naming every unmet condition; ``code`` is the first one's."""


def _refuse(batch_number: str, problems: list[tuple[str, str]]) -> ReleaseRefused:
    error = ReleaseRefused(
        f"batch {batch_number} cannot be released: "
        + "; ".join(message for _, message in problems),
        extra={"problems": [{"code": c, "message": m} for c, m in problems]},
    )
    error.code = problems[0][0]  # type: ignore[misc]
    return error



def release_batch(
    session: Session,
    batch_number: str,
    *,
    user_id: int,
    signature: SignatureInput,
    justification: str | None = None,
    conditional: bool = False,
) -> ReleaseDecision:
    """QA release (SPEC §5), decided in one transaction holding the batch lock.

    On a conditionally released batch a release without ``conditional`` is the final
    release: it needs every pending result passed and its own QA signature."""
    batch = batches.get_batch(session, batch_number, for_update=True)
    if awaits_final_release(batch.status) and not conditional:
        return _final_release(session, batch, user_id=user_id, signature=signature)
    if decided(batch.status):
        raise InvalidTransition(f"batch {batch_number} is already {batch.status}")
    user = _user(session, user_id)
    _independent(session, user, batch_number)
    justification = (justification or "").strip() or None
    if conditional and justification is None:
        raise field_error("conditional.justification",
                          "a conditional release needs a written justification")
    overview = qc_overview(session, batch_number)
    qc_problems, pending = _qc_problems(overview, conditional=conditional)
    problems = _order([*batches.release_blockers(session, batch_number), *qc_problems])
    if problems:
        raise _refuse(batch_number, problems)
    if conditional and not pending:
        raise field_error("conditional", "every QC test has a passing result: release the "
                                         "batch without conditions")
    kind = DecisionKind.CONDITIONAL_RELEASE if conditional else DecisionKind.RELEASE
    status = CONDITIONALLY_RELEASED if conditional else "released"
    item_ids = [i for i in batches.final_product_item_ids(session, batch_number)
                if identity.get_item(session, i).status == RELEASABLE_ITEM]
    content = {"batch_number": batch_number, "coi_id": batch.coi_id, "decision": kind.value,
               "items": item_ids, "pending_tests": pending, "justification": justification,
               "qc": [(r.test, r.current_result_id) for r in overview]}
    signed = sign(session, user, signature, entity_type="batch", entity_id=batch_number,
                  content=content, meanings={Meaning.RELEASED.value})
    why = (f"conditional release, pending {', '.join(pending)}: {justification}"
           if conditional else "released by QA")
    decision = ReleaseDecision(
        batch_number=batch_number, kind=kind.value, decided_at=utcnow(), decided_by=user.id,
        signature_id=signed.id, justification=justification,
        pending_tests_json=json.dumps(pending), items_json=json.dumps(item_ids),
    )
    session.add(decision)
    session.flush()
    for item_id in item_ids:
        identity.transition_item(session, item_id, status, reason=why)
    batches.set_batch_status(session, batch_number, status, reason=why)
    # The treating clinicians are told (issue 15): a conditional release means the
    # product may reach the patient before every result is in.
    raise_alert(session, AlertSpec(
        cause=f"{CONDITIONAL_RELEASE_GIVEN if conditional else RELEASE_GIVEN}:{batch_number}",
        kind=CONDITIONAL_RELEASE_GIVEN if conditional else RELEASE_GIVEN,
        severity="warning" if conditional else "info",
        subject_type="batch", subject_id=batch_number,
        message=(f"Batch {batch_number} (COI {batch.coi_id}) is conditionally released by QA "
                 f"({user.full_name}) before {', '.join(pending)}: {justification}"
                 if conditional else
                 f"Batch {batch_number} (COI {batch.coi_id}) is released by QA "
                 f"({user.full_name})."),
        roles=("clinician",), site_code=_treating_site(session, batch.coi_id),
    ))
    return decision


def _independent(session: Session, user: User, batch_number: str) -> None:
    """SPEC §5.4: whoever made or tested the batch cannot release it (nor give its final
    release: a user holding qa and qc who entered the pending result is refused)."""
    if user.id in batches.batch_performers(session, batch_number):
        raise SegregationOfDuties(
            f"{user.username} performed, recorded or verified a step of batch {batch_number}: "
            "another QA person must release it")
    if user.id in _qc_people(session, batch_number):
        raise SegregationOfDuties(
            f"{user.username} recorded or reviewed a QC result of batch {batch_number}: "
            "another QA person must release it")


def _final_release(
    session: Session, batch: Batch, *, user_id: int, signature: SignatureInput
) -> ReleaseDecision:
    """SPEC §5: the final release of a conditionally released batch, signed by an
    independent QA user once every pending result has passed (EU GMP Annex 16 §1.7:
    certification is a QA act; the system never finalises a release on its own)."""
    number = batch.batch_number
    conditional = _decision(session, number, DecisionKind.CONDITIONAL_RELEASE)
    if conditional is None:  # a conditional batch status always has its decision
        raise InvalidTransition(f"batch {number} has no conditional release to finalise")
    if _decision(session, number, DecisionKind.FAILED_AFTER_RELEASE) is not None:
        raise conflict("qc_failed", f"a result of batch {number} failed after its conditional "
                                    "release: the product is blocked and can only be rejected")
    user = _user(session, user_id)
    _independent(session, user, number)
    overview = qc_overview(session, number)
    problems = [*batches.release_blockers(session, number)]
    failed = [f"{r.test} failed (specification {r.specification})"
              for r in overview if r.failed]
    pending = [r.test for r in overview if r.pending]
    if pending:
        problems.append(("qc_incomplete", "the final release waits for every pending result: "
                         + ", ".join(f"{t} has no result" for t in pending)))
    if failed:
        problems.append(("qc_failed", "QC out of specification: " + "; ".join(failed)))
    if problems:
        raise _refuse(number, _order(problems))
    item_ids = [i for i in batches.final_product_item_ids(session, number)
                if identity.get_item(session, i).status == CONDITIONALLY_RELEASED]
    passed = [r for r in overview if r.test in set(conditional.pending_tests)]
    why = "final release: pending QC passed: " + ", ".join(
        f"{r.test} (result {r.current_result_id})" for r in passed)
    content = {"batch_number": number, "coi_id": batch.coi_id,
               "decision": DecisionKind.FINAL_RELEASE.value,
               "conditional_release": conditional.id, "items": item_ids,
               "qc": [(r.test, r.current_result_id) for r in overview]}
    # 21 CFR 11.70: the signature binds the decision, the items and the results it rests on.
    signed = sign(session, user, signature, entity_type="batch", entity_id=number,
                  content=content, meanings={Meaning.RELEASED.value})
    decision = ReleaseDecision(
        batch_number=number, kind=DecisionKind.FINAL_RELEASE.value, decided_at=utcnow(),
        decided_by=user.id, signature_id=signed.id, reason=why,
        pending_tests_json=json.dumps(conditional.pending_tests),
        items_json=json.dumps(item_ids),
    )
    session.add(decision)
    session.flush()
    # Bags already shipped, received or thawed keep their place in the chain of custody;
    # only the ones still waiting at the manufacturer change status.
    for item_id in item_ids:
        identity.transition_item(session, item_id, "released", reason=why)
    batches.set_batch_status(session, number, "released", reason=why)
    _close_due_alert(session, number, user, f"final release given (decision {decision.id})")
    treating = _treating_site(session, batch.coi_id)
    raise_alert(session, AlertSpec(
        cause=f"{FINAL_RELEASE_GIVEN}:{number}", kind=FINAL_RELEASE_GIVEN, severity="info",
        subject_type="batch", subject_id=number,
        message=(f"Batch {number} (COI {batch.coi_id}) is now finally released by QA "
                 f"({user.full_name}): {', '.join(t for t in conditional.pending_tests)} "
                 "passed. The conditional release no longer applies."),
        roles=("clinician",), site_code=treating,
    ))
    return decision


def _close_due_alert(session: Session, batch_number: str, user: User, note: str) -> None:
    """The 'final release due' alert is done once QA has decided (released or rejected)."""
    alert = session.scalar(select(Alert).where(
        Alert.cause == f"{FINAL_RELEASE_DUE}:{batch_number}",
        Alert.status == AlertStatus.OPEN.value))
    if alert is not None:
        acknowledge(session, alert.id, user, note=note)



def reject_batch(
    session: Session, batch_number: str, *, user_id: int, signature: SignatureInput, reason: str
) -> ReleaseDecision:
    """QA rejection: the batch and its items are rejected for good (released ones already
    shipped are blocked, since only a bag in QA's hands can take the status rejected)."""
    reason = (reason or "").strip()
    if not reason:
        raise field_error("reason", "say why the batch is rejected")
    batch = batches.get_batch(session, batch_number, for_update=True)
    if not may_reject(batch.status):
        raise InvalidTransition(f"batch {batch_number} is already {batch.status}")
    user = _user(session, user_id)
    rejected, blocked, untouched = [], [], []
    for item_id in batches.final_product_item_ids(session, batch_number):
        item = identity.get_item(session, item_id)
        if identity.can_transition(item, "rejected"):
            rejected.append(item_id)
        elif identity.can_transition(item, "blocked"):
            blocked.append(item_id)
        else:
            untouched.append(f"{item_id} ({item.status})")
    content = {"batch_number": batch_number, "coi_id": batch.coi_id, "decision": "reject",
               "reason": reason, "rejected": rejected, "blocked": blocked}
    signed = sign(session, user, signature, entity_type="batch", entity_id=batch_number,
                  content=content, meanings={Meaning.REJECTED.value})
    decision = ReleaseDecision(
        batch_number=batch_number, kind=DecisionKind.REJECT.value, decided_at=utcnow(),
        decided_by=user.id, signature_id=signed.id, reason=reason,
        items_json=json.dumps(rejected + blocked), administered_json=json.dumps(untouched),
    )
    session.add(decision)
    session.flush()
    for item_id in rejected:
        identity.transition_item(session, item_id, "rejected", reason=f"batch rejected: {reason}")
    for item_id in blocked:
        identity.transition_item(session, item_id, "blocked", reason=f"batch rejected: {reason}")
    identity.reject_starting_material(session, batch.starting_item_id, batch_number, reason)
    batches.set_batch_status(session, batch_number, "rejected", reason=reason)
    _close_due_alert(session, batch_number, user, f"batch rejected (decision {decision.id})")
    return decision
