"""Rules of QC testing and QA release (SPEC §2, §5; issue 6).

Services take a session, enforce every rule, flush and never commit. Every change
of a batch's QC record or release state first locks the batch row through
``batches.services.get_batch(..., for_update=True)`` (SELECT ... FOR UPDATE on
PostgreSQL; on SQLite the write transaction already holds the database lock from
BEGIN IMMEDIATE), so a result, a release and a rejection of one batch are
serialised and two QA users can never both release it.

Other domains are reached only through their services modules: batches at the top
(it never imports qc at module level), identity lazily (identity imports batches).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import identity.services as identity
from batches import services as batches
from gmp_mes import audit
from gmp_mes.alerts import Alert, AlertSpec, AlertStatus, acknowledge, raise_alert
from gmp_mes.audit import format_time
from gmp_mes.clock import utcnow
from gmp_mes.durations import format_duration
from gmp_mes.errors import (
    AlreadyExists,
    CoiMismatch,
    InvalidTransition,
    NotFound,
    SegregationOfDuties,
    ValidationFailed,
    conflict,
    field_error,
)
from gmp_mes.models import Meaning, Signature, Site, User
from gmp_mes.physical import physical_problem
from gmp_mes.registry import RecordSection
from gmp_mes.signatures import SignatureInput, sign
from qc.models import DecisionKind, QcInvalidation, QcResult, QcReview, ReleaseDecision

__all__ = [
    "invalidate_result",
    "qc_overview",
    "record_result",
    "reject_batch",
    "release_batch",
    "release_decision",
    "release_problems",
    "release_queue",
    "review_result",
]

INVALID_OUTCOME = batches.INVALID_OUTCOME
# Batches whose QC record is open: results may be entered.
QC_OPEN_STATUSES = ("in_process", "on_hold", "awaiting_release", "conditionally_released")
# Item statuses a release moves to released / conditionally released.
RELEASABLE_ITEM = "quarantine"
POSITIVE_AFTER_RELEASE = "qc_positive_after_release"
FINAL_RELEASE_DUE = "final_release_due"
FINAL_RELEASE_GIVEN = "final_release_given"
CONDITIONAL_RELEASE_GIVEN = "conditional_release_given"
RELEASE_GIVEN = "release_given"


def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


def _spec(session: Session, batch_number: str, test: str) -> batches.QcSpec:
    specs = batches.qc_specs(session, batch_number)
    for spec in specs:
        if spec.test == test:
            return spec
    names = ", ".join(s.test for s in specs)
    raise field_error("test", f"unknown test {test!r}; the specification has: {names}")


def _number(value: float) -> str:
    return f"{value:g}"


# --- results ------------------------------------------------------------------------------

def _evaluate(
    spec: batches.QcSpec, *, value: float | None, outcome: str | None, unit: str | None
) -> tuple[float | None, str | None, str | None, bool]:
    """Check the entry against the spec's kind and unit; compute ``passed`` (never typed)."""
    errors: dict[str, list[str]] = {}
    if spec.qualitative:
        if value is not None:
            errors["value"] = [f"{spec.test} is qualitative: give `outcome`, not `value`"]
        text_ = batches.normal_outcome(outcome or "")
        choices = spec.outcomes
        if not text_:
            errors["outcome"] = [f"required for {spec.test}: one of {', '.join(choices)}"]
        elif text_ not in choices:
            # Choices, not free text (issue 13): a typo never becomes a signed result.
            errors["outcome"] = [f"must be one of: {', '.join(choices)}"]
        if unit not in (None, ""):
            errors["unit"] = [f"{spec.test} is qualitative: it has no unit"]
        if errors:
            raise ValidationFailed("the result does not fit the test", errors=errors)
        return None, text_, None, text_ == choices[0]
    if outcome is not None:
        errors["outcome"] = [f"{spec.test} is quantitative: give `value`, not `outcome`"]
    if value is None:
        errors["value"] = [f"required for {spec.test} ({spec.spec_text()})"]
    elif problem := physical_problem(value, spec.unit):
        # Physical range before the limits: -5 EU/mL must not pass a max-only spec.
        errors["value"] = [problem]
    given_unit = (unit or "").strip() or None
    if given_unit is not None and given_unit != (spec.unit or None):
        errors["unit"] = [f"{spec.test} is specified in {spec.unit or 'no unit'}; "
                          f"convert the value to it"]
    if errors:
        raise ValidationFailed("the result does not fit the test", errors=errors)
    assert value is not None
    value = float(value)
    passed = (spec.min is None or value >= spec.min) and (spec.max is None or value <= spec.max)
    return value, None, spec.unit, passed


def _result_content(result: QcResult) -> dict[str, Any]:
    """What the analyst signs (21 CFR 11.70: the signature binds this exact content)."""
    return {
        "batch_number": result.batch_number,
        "coi_id": result.coi_id,
        "test": result.test,
        "version": result.version,
        "supersedes_id": result.supersedes_id,
        "value": result.value,
        "outcome": result.outcome,
        "unit": result.unit,
        "method": result.method,
        "specification": result.specification,
        "passed": result.passed,
        "sample_item_id": result.sample_item_id,
        "correction_reason": result.correction_reason,
    }


def _results(session: Session, batch_number: str) -> list[QcResult]:
    return list(session.scalars(
        select(QcResult).where(QcResult.batch_number == batch_number).order_by(QcResult.id)
    ))


@dataclass
class _TestState:
    """One test's results: every version, the invalidated ones, the current one."""

    results: list[QcResult]
    superseded: set[int]
    invalid: dict[int, QcInvalidation]
    reviews: dict[int, QcReview]

    @property
    def current(self) -> QcResult | None:
        """The newest valid result version (None: no valid result, the test is open).

        A result recorded with the outcome ``invalid`` (the assay gave no valid answer)
        leaves the test open like an invalidated one: it is neither a pass nor an
        out-of-specification result, and a retest may follow."""
        for result in reversed(self.results):
            if result.id not in self.superseded and not self.is_invalid(result):
                return result
        return None

    def is_invalid(self, result: QcResult) -> bool:
        return result.id in self.invalid or result.outcome == INVALID_OUTCOME


def _states(session: Session, batch_number: str) -> dict[str, _TestState]:
    results = _results(session, batch_number)
    ids = [r.id for r in results]
    invalid = {i.result_id: i for i in session.scalars(
        select(QcInvalidation).where(QcInvalidation.result_id.in_(ids)))} if ids else {}
    reviews = {r.result_id: r for r in session.scalars(
        select(QcReview).where(QcReview.result_id.in_(ids)))} if ids else {}
    superseded = {r.supersedes_id for r in results if r.supersedes_id is not None}
    states: dict[str, _TestState] = {}
    for result in results:
        state = states.setdefault(result.test, _TestState([], superseded, invalid, reviews))
        state.results.append(result)
    return states


MAX_ID = 2**31 - 1  # ids are 32-bit integers; a larger number cannot name a result


def _head(session: Session, result_id: int) -> QcResult:
    if not 0 < result_id <= MAX_ID:
        raise NotFound(f"no QC result {result_id}")
    result = session.get(QcResult, result_id)
    if result is None:
        raise NotFound(f"no QC result {result_id}")
    return result


def _lock_open_batch(session: Session, batch_number: str) -> Any:
    batch = batches.get_batch(session, batch_number, for_update=True)
    if batch.status not in QC_OPEN_STATUSES:
        raise conflict(
            "qc_closed",
            f"batch {batch_number} is {batch.status}: its QC record is closed",
        )
    return batch


def record_result(
    session: Session,
    batch_number: str,
    *,
    test: str,
    user_id: int,
    signature: SignatureInput,
    value: float | None = None,
    outcome: str | None = None,
    unit: str | None = None,
    method: str | None = None,
    sample_item_id: str | None = None,
    corrects: int | None = None,
    reason: str | None = None,
) -> QcResult:
    """Record one result (or a correction: a new version of ``corrects`` with a reason)."""
    batch = _lock_open_batch(session, batch_number)
    spec = _spec(session, batch_number, test)
    value, outcome, unit_, passed = _evaluate(spec, value=value, outcome=outcome, unit=unit)
    user = _user(session, user_id)
    state = _states(session, batch_number).get(test)
    current = state.current if state else None
    version, supersedes = 1, None
    if corrects is not None:
        reason = (reason or "").strip()
        if not reason:
            raise field_error("reason", "a correction needs a reason")
        try:
            old = _head(session, corrects)
        except NotFound:
            raise field_error("corrects", f"no QC result {corrects}") from None
        if old.batch_number != batch_number or old.test != test:
            raise field_error("corrects", f"result {corrects} is not a {test} result of "
                                          f"batch {batch_number}")
        if current is None or current.id != old.id:
            raise conflict("superseded", f"result {corrects} is not the current {test} result "
                                         "(already corrected or invalid): reload")
        version, supersedes = old.version + 1, old.id
    elif current is not None:
        # An out-of-specification result cannot be tested away (EU GMP Part I 6.35):
        # a new result only replaces one that was declared invalid, with a reason.
        raise conflict(
            "qc_result_exists",
            f"{test} already has result {current.id}: correct it (new version with a "
            "reason) or mark it invalid before a retest",
        )
    sample = None
    if sample_item_id:
        sample = _sample(session, sample_item_id, batch.coi_id)
    result = QcResult(
        batch_number=batch_number,
        coi_id=batch.coi_id,
        test=test,
        version=version,
        supersedes_id=supersedes,
        correction_reason=reason if corrects is not None else None,
        value=value,
        outcome=outcome,
        unit=unit_,
        method=(method or "").strip() or spec.method,
        specification=spec.spec_text(),
        passed=passed,
        sample_item_id=sample,
        recorded_by=user.id,
        recorded_at=utcnow(),
    )
    signed = sign(session, user, signature, entity_type="qc_result",
                  entity_id=f"{batch_number}:{test}", content=_result_content(result),
                  meanings={Meaning.PERFORMED.value})
    result.signature_id = signed.id
    with audit.reason(session, result.correction_reason):
        session.add(result)
        session.flush()
    if batch.status == "conditionally_released":
        _follow_up_conditional(session, batch_number)
    return result


def _sample(session: Session, item_id: str, coi_id: str) -> str:
    try:
        item = identity.get_item(session, item_id)
    except NotFound:
        raise field_error("sample_item_id", f"no item {item_id}") from None
    if item.kind != "qc_sample":
        raise field_error("sample_item_id", f"{item.item_id} is a {item.kind}, not a QC sample")
    if item.coi_id != coi_id:
        # Autologous rule: a sample of another patient must never stand for this batch.
        raise CoiMismatch(f"sample {item.item_id} belongs to COI {item.coi_id}, "
                          f"the batch to {coi_id}")
    return item.item_id


def review_result(
    session: Session, result_id: int, *, user_id: int, signature: SignatureInput,
    batch_number: str | None = None,
) -> QcReview:
    """Second-person review of a result version (never by its analyst)."""
    result = _head(session, result_id)
    if batch_number is not None and result.batch_number != batch_number:
        raise NotFound(f"no QC result {result_id} in batch {batch_number}")
    batches.get_batch(session, result.batch_number, for_update=True)
    user = _user(session, user_id)
    if user.id in (result.recorded_by, result.signature.user_id):
        raise SegregationOfDuties("the analyst who recorded a result cannot review it")
    if session.scalar(select(QcReview).where(QcReview.result_id == result.id)) is not None:
        raise AlreadyExists(f"result {result_id} is already reviewed")
    signed = sign(session, user, signature, entity_type="qc_result",
                  entity_id=f"{result.batch_number}:{result.test}",
                  content={"review_of": result.id, **_result_content(result)},
                  meanings={Meaning.REVIEWED.value})
    review = QcReview(result_id=result.id, reviewed_by=user.id, reviewed_at=utcnow(),
                      signature_id=signed.id)
    session.add(review)
    session.flush()
    return review


def invalidate_result(
    session: Session, result_id: int, *, user_id: int, signature: SignatureInput, reason: str,
    batch_number: str | None = None,
) -> QcInvalidation:
    """Declare the current version of a result invalid (assay failure); the test reopens."""
    result = _head(session, result_id)
    if batch_number is not None and result.batch_number != batch_number:
        raise NotFound(f"no QC result {result_id} in batch {batch_number}")
    reason = (reason or "").strip()
    if not reason:
        raise field_error("reason", "say why the result is invalid")
    _lock_open_batch(session, result.batch_number)
    state = _states(session, result.batch_number)[result.test]
    if state.current is None or state.current.id != result.id:
        raise conflict("superseded", f"result {result_id} is not the current {result.test} "
                                     "result (already corrected or invalid)")
    user = _user(session, user_id)
    signed = sign(session, user, signature, entity_type="qc_result",
                  entity_id=f"{result.batch_number}:{result.test}",
                  content={"invalidates": result.id, "reason": reason,
                           **_result_content(result)},
                  meanings={Meaning.PERFORMED.value, Meaning.REVIEWED.value})
    invalidation = QcInvalidation(result_id=result.id, reason=reason, invalidated_by=user.id,
                                  invalidated_at=utcnow(), signature_id=signed.id)
    with audit.reason(session, reason):
        session.add(invalidation)
        session.flush()
    return invalidation


# --- overview -----------------------------------------------------------------------------

def _sample_times(session: Session, batch_number: str) -> dict[str, datetime]:
    """When each step was (last) recorded: a test's clock starts at its sample step."""
    batch = batches.get_batch(session, batch_number)
    times: dict[str, datetime] = {}
    for record in batches.current_records(session, batch):
        previous = times.get(record.step_code)
        if previous is None or record.performed_at > previous:
            times[record.step_code] = record.performed_at
    definition = batches.definition_of_batch(batch)
    fill = next((s.code for s in definition.steps if s.creates == "final_product"), None)
    if fill is not None and fill in times:
        times[""] = times[fill]  # tests without a sample step: from the fill
    return times


def _signature(signature: Signature | None) -> dict[str, Any] | None:
    if signature is None:
        return None
    return {
        "printed_name": signature.printed_name,
        "username": signature.username,
        "meaning": signature.meaning,
        "reason": signature.reason,
        "signed_at": format_time(signature.signed_at),
        "content_digest": signature.content_digest,
        "manifestation": signature.manifestation(),
    }


def result_dict(result: QcResult, state: _TestState | None = None) -> dict[str, Any]:
    invalid = state.invalid.get(result.id) if state else None
    review = state.reviews.get(result.id) if state else None
    return {
        "id": result.id,
        "batch_number": result.batch_number,
        "test": result.test,
        "version": result.version,
        "supersedes_id": result.supersedes_id,
        "correction_reason": result.correction_reason,
        "value": result.value,
        "outcome": result.outcome,
        "unit": result.unit,
        "method": result.method,
        "specification": result.specification,
        "passed": result.passed,
        "sample_item_id": result.sample_item_id,
        "recorded_at": format_time(result.recorded_at),
        "current": bool(state and state.current is not None and state.current.id == result.id),
        "superseded": bool(state and result.id in state.superseded),
        "invalid": invalid is not None or result.outcome == INVALID_OUTCOME,
        "invalid_reason": invalid.reason if invalid else (
            "recorded as invalid: the assay gave no valid result"
            if result.outcome == INVALID_OUTCOME else None),
        "invalidation_signature": _signature(invalid.signature) if invalid else None,
        "signature": _signature(result.signature),
        "review_signature": _signature(review.signature) if review else None,
    }


def qc_overview(session: Session, batch_number: str) -> list[dict[str, Any]]:
    """Per test of the batch's release specification: status (``required`` before the
    sample is taken, ``pending`` once it is, then ``passed`` / ``failed``), due time,
    and every result version with its signatures."""
    specs = batches.qc_specs(session, batch_number)
    states = _states(session, batch_number)
    times = _sample_times(session, batch_number)
    now = utcnow()
    rows = []
    for spec in specs:
        state = states.get(spec.test)
        current = state.current if state else None
        sampled = times.get(spec.sample_step or "")
        due_at = sampled + spec.time_to_result if sampled and spec.time_to_result else None
        if current is not None:
            status = "passed" if current.passed else "failed"
        else:
            status = "pending" if sampled is not None else "required"
        rows.append({
            "test": spec.test,
            "method": spec.method,
            "unit": spec.unit,
            "specification": spec.spec_text(),
            "min": spec.min,
            "max": spec.max,
            "accept": spec.accept,
            "outcomes": list(spec.outcomes),
            "release_before_result": spec.release_before_result,
            "time_to_result": format_duration(spec.time_to_result)
            if spec.time_to_result else None,
            "required": True,
            "status": status,
            "pending": current is None,
            "passed": current is not None and current.passed,
            "failed": current is not None and not current.passed,
            "invalid": sum(1 for r in state.results if state.is_invalid(r)) if state else 0,
            "due_at": format_time(due_at) if due_at else None,
            "overdue": bool(current is None and due_at is not None and due_at <= now),
            "current_result_id": current.id if current else None,
            "results": [result_dict(r, state) for r in state.results] if state else [],
        })
    return rows


# --- release ------------------------------------------------------------------------------

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
    overview: list[dict[str, Any]], *, conditional: bool
) -> tuple[list[tuple[str, str]], list[str]]:
    """QC conditions of SPEC §5.2: problems, and the tests a conditional release may leave
    pending (release_before_result)."""
    incomplete, failed, pending_allowed = [], [], []
    for row in overview:
        if row["failed"]:
            failed.append(f"{row['test']} failed (specification {row['specification']})")
        elif row["pending"]:
            if row["release_before_result"] and conditional:
                pending_allowed.append(row["test"])
            elif row["release_before_result"]:
                incomplete.append(f"{row['test']} has no result (a conditional release with "
                                  "a written justification may leave it pending)")
            else:
                incomplete.append(f"{row['test']} has no result")
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
    overview: list[dict[str, Any]] | None = None,
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


def _decision(session: Session, batch_number: str, kind: str) -> ReleaseDecision | None:
    return session.scalar(select(ReleaseDecision).where(
        ReleaseDecision.batch_number == batch_number, ReleaseDecision.kind == kind))


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
    if batch.status == "conditionally_released" and not conditional:
        return _final_release(session, batch, user_id=user_id, signature=signature)
    if batch.status in ("released", "conditionally_released", "rejected"):
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
    status = "conditionally_released" if conditional else "released"
    item_ids = [i for i in batches.final_product_item_ids(session, batch_number)
                if identity.get_item(session, i).status == RELEASABLE_ITEM]
    content = {"batch_number": batch_number, "coi_id": batch.coi_id, "decision": kind.value,
               "items": item_ids, "pending_tests": pending, "justification": justification,
               "qc": [(r["test"], r["current_result_id"]) for r in overview]}
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
    session: Session, batch: Any, *, user_id: int, signature: SignatureInput
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
    failed = [f"{r['test']} failed (specification {r['specification']})"
              for r in overview if r["failed"]]
    pending = [r["test"] for r in overview if r["pending"]]
    if pending:
        problems.append(("qc_incomplete", "the final release waits for every pending result: "
                         + ", ".join(f"{t} has no result" for t in pending)))
    if failed:
        problems.append(("qc_failed", "QC out of specification: " + "; ".join(failed)))
    if problems:
        raise _refuse(number, _order(problems))
    item_ids = [i for i in batches.final_product_item_ids(session, number)
                if identity.get_item(session, i).status == "conditionally_released"]
    passed = [r for r in overview if r["test"] in set(conditional.pending_tests)]
    why = "final release: pending QC passed: " + ", ".join(
        f"{r['test']} (result {r['current_result_id']})" for r in passed)
    content = {"batch_number": number, "coi_id": batch.coi_id,
               "decision": DecisionKind.FINAL_RELEASE.value,
               "conditional_release": conditional.id, "items": item_ids,
               "qc": [(r["test"], r["current_result_id"]) for r in overview]}
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


def _treating_site(session: Session, coi_id: str) -> str | None:
    try:
        return identity.get_patient(session, coi_id).treatment_site
    except NotFound:
        return None


def reject_batch(
    session: Session, batch_number: str, *, user_id: int, signature: SignatureInput, reason: str
) -> ReleaseDecision:
    """QA rejection: the batch and its items are rejected for good (released ones already
    shipped are blocked, since only a bag in QA's hands can take the status rejected)."""
    reason = (reason or "").strip()
    if not reason:
        raise field_error("reason", "say why the batch is rejected")
    batch = batches.get_batch(session, batch_number, for_update=True)
    if batch.status in ("released", "rejected"):
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


# --- result after a conditional release (SPEC §5, last paragraph) -----------------------

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
    failed = [row for row in overview if row["failed"]]
    if failed:
        _fail_after_release(session, batch_number, failed)
    elif all(row["passed"] for row in overview):
        pending = set(conditional.pending_tests)
        _final_release_due(session, batch_number,
                           [r for r in overview if r["test"] in pending])


def _final_release_due(session: Session, batch_number: str, rows: list[dict[str, Any]]) -> None:
    """One alert to QA (every site): the batch waits for its final release."""
    batch = batches.get_batch(session, batch_number)
    passed = ", ".join(f"{r['test']} (result {r['current_result_id']})" for r in rows)
    raise_alert(session, AlertSpec(
        cause=f"{FINAL_RELEASE_DUE}:{batch_number}", kind=FINAL_RELEASE_DUE,
        severity="warning", subject_type="batch", subject_id=batch_number,
        message=(f"Batch {batch_number} (COI {batch.coi_id}) was released conditionally; "
                 f"the pending results passed: {passed}. The final release by QA is due "
                 "(QA release queue); until then the product stays conditionally released."),
        roles=("qa",),
    ))


def _is_treatment(session: Session, site_code: str) -> bool:
    site = session.scalar(select(Site).where(Site.code == site_code))
    return site is not None and site.kind == "treatment"


def _fail_after_release(session: Session, batch_number: str, rows: list[dict[str, Any]]) -> None:
    batch = batches.get_batch(session, batch_number)
    what = ", ".join(f"{r['test']} failed (result {r['current_result_id']}, specification "
                     f"{r['specification']})" for r in rows)
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


# --- bedside (SPEC §6) -------------------------------------------------------------------

def release_warnings(session: Session, batch_number: str) -> list[dict[str, str]]:
    """What a bedside MATCH must say about the batch's release: a conditionally released
    product names the tests still pending (registered with identity at init_app)."""
    try:
        batch = batches.get_batch(session, batch_number)
    except NotFound:
        return []
    if batch.status != "conditionally_released":
        return []
    conditional = _decision(session, batch_number, DecisionKind.CONDITIONAL_RELEASE)
    pending = [r["test"] for r in qc_overview(session, batch_number) if r["pending"]]
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


# --- read side ----------------------------------------------------------------------------

def decisions_of(session: Session, batch_number: str) -> list[ReleaseDecision]:
    return list(session.scalars(
        select(ReleaseDecision).where(ReleaseDecision.batch_number == batch_number)
        .order_by(ReleaseDecision.id)
    ))


def decision_dict(decision: ReleaseDecision) -> dict[str, Any]:
    return {
        "id": decision.id,
        "batch_number": decision.batch_number,
        "kind": decision.kind,
        "conditional": decision.kind == DecisionKind.CONDITIONAL_RELEASE,
        "decided_at": format_time(decision.decided_at),
        "justification": decision.justification,
        "reason": decision.reason,
        "pending_tests": decision.pending_tests,
        "items": decision.items,
        "administered_items": decision.administered,
        "alert_id": decision.alert_id,
        "signature": _signature(decision.signature),
    }


def release_decision(session: Session, batch_number: str) -> dict[str, Any] | None:
    """The release state for the batch record (page, API, PDF export)."""
    decisions = decisions_of(session, batch_number)
    if not decisions:
        return None
    batch = batches.get_batch(session, batch_number)
    state: dict[str, Any] = {"status": batch.status,
                             "conditional": batch.status == "conditionally_released"}
    for decision in decisions:
        label = decision.kind
        if decision.signature is not None:
            state[f"{label} signature"] = _signature(decision.signature)
        if decision.justification:
            state[f"{label} justification"] = decision.justification
        if decision.pending_tests:
            state[f"{label} pending tests"] = ", ".join(decision.pending_tests)
        if decision.reason:
            state[f"{label} reason"] = decision.reason
        if decision.kind == DecisionKind.FAILED_AFTER_RELEASE:
            state["blocked items"] = ", ".join(decision.items) or "none"
            state["administered before the failure"] = ", ".join(decision.administered) or "none"
    return state


QUEUE_STATUSES = ("awaiting_release", "on_hold", "conditionally_released")


def release_queue(session: Session, *, limit: int | None = None,
                  offset: int = 0) -> list[dict[str, Any]]:
    """Batches awaiting QA (or on hold, or conditionally released and awaiting results or
    their final release), oldest first, each with what is missing for a release."""
    rows = []
    waiting = list(reversed(batches.list_batches(session, statuses=QUEUE_STATUSES)))
    # Only the page's batches get their (costly) overview.
    for batch in waiting[offset:None if limit is None else offset + limit]:
        overview = qc_overview(session, batch.batch_number)
        final_due = False
        if batch.status == "conditionally_released":
            problems = [("qc_pending", f"{r['test']} pending (due {r['due_at'] or '-'})")
                        for r in overview if r["pending"]]
            problems += [("qc_failed", f"{r['test']} failed") for r in overview if r["failed"]]
            if _decision(session, batch.batch_number,
                         DecisionKind.FAILED_AFTER_RELEASE) is not None and not any(
                             code == "qc_failed" for code, _ in problems):
                problems.append(("qc_failed", "a result failed after the conditional release"))
            final_due = not problems
            conditional_possible = False
        else:
            blockers = batches.release_blockers(session, batch.batch_number)
            problems = release_problems(session, batch.batch_number, overview=overview,
                                        blockers=blockers)
            conditional_possible = not release_problems(
                session, batch.batch_number, conditional=True, overview=overview,
                blockers=blockers,
            ) and any(r["pending"] and r["release_before_result"] for r in overview)
        rows.append({
            "batch_number": batch.batch_number,
            "coi_id": batch.coi_id,
            "status": batch.status,
            "process_code": batch.process_code,
            "process_version": batch.process_version,
            "conditional": batch.status == "conditionally_released",
            "releasable": not problems and batch.status != "conditionally_released",
            # Every pending result passed: QA's final release (SPEC §5) is due.
            "final_release_due": final_due,
            "conditional_release_possible": conditional_possible,
            "problems": [{"code": c, "message": m} for c, m in problems],
            "qc": overview,
        })
    return rows


def pending_qc(session: Session) -> list[tuple[Any, list[dict[str, Any]]]]:
    """Batches with QC still open, and their open tests (the QC work list)."""
    out = []
    for batch in batches.list_batches(session, statuses=QC_OPEN_STATUSES):
        open_ = [r for r in qc_overview(session, batch.batch_number) if r["pending"]]
        if open_:
            out.append((batch, open_))
    return out


def batch_record_sections(session: Session, batch_number: str) -> list[RecordSection]:
    """What qc writes into the executed batch record (registry.batch_record_sections)."""
    return [RecordSection("qc", qc_overview(session, batch_number)),
            RecordSection("release", release_decision(session, batch_number))]
