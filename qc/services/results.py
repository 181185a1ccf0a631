"""QC results (SPEC §2): record, correct, review and invalidate a result version."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import identity.services as identity
from batches import services as batches
from gmp_mes import audit
from gmp_mes.clock import utcnow
from gmp_mes.errors import (
    AlreadyExists,
    CoiMismatch,
    NotFound,
    SegregationOfDuties,
    ValidationFailed,
    conflict,
    field_error,
)
from gmp_mes.models import Meaning
from gmp_mes.physical import physical_problem
from gmp_mes.signatures import SignatureInput, sign
from qc.models import QcInvalidation, QcResult, QcReview
from qc.services._common import (
    _head,
    _lock_open_batch,
    _spec,
    _states,
    _user,
)
from qc.services.conditional import _follow_up_conditional
from qc.services.states import awaits_final_release


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
    if awaits_final_release(batch.status):
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
