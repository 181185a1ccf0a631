"""Deviations: reported or opened by out-of-limit values, QA's signed assessment and
closure (EU GMP Chapter 1.4(xiv)); major and critical ones hold the batch."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from batches.models import (
    Batch,
    Deviation,
    DeviationKind,
    DeviationSeverity,
    DeviationStatus,
)
from batches.services._common import deviation_number, load_user
from batches.services.batches import definition_of_batch, get_batch
from batches.services.status import refresh_status
from gmp_mes import audit, signatures
from gmp_mes.clock import utcnow
from gmp_mes.db import lock_rows
from gmp_mes.errors import Forbidden, InvalidTransition, NotFound, field_error
from gmp_mes.models import Meaning, Signature, User
from gmp_mes.signatures import SignatureInput


def deviations_of(session: Session, batch: Batch) -> list[Deviation]:
    return list(session.scalars(
        select(Deviation).where(Deviation.batch_id == batch.id).order_by(Deviation.id)
    ))


def get_deviation(session: Session, ref: str | int, *, for_update: bool = False) -> Deviation:
    """A deviation by its number (CART-26-0001-D01) or numeric id."""
    text_ = str(ref).strip()
    statement = select(Deviation).where(
        Deviation.id == int(text_) if text_.isdigit() else Deviation.number == text_.upper()
    )
    if for_update:
        statement = lock_rows(statement, Deviation)
    deviation = session.scalar(statement)
    if deviation is None:
        raise NotFound(f"no deviation {ref}")
    return deviation


def open_deviation(
    session: Session,
    batch_number: str,
    *,
    severity: str,
    description: str,
    user_id: int,
    step_code: str | None = None,
    kind: str = DeviationKind.MANUAL.value,
) -> Deviation:
    """A reported event (EU GMP Chapter 1.4(xiv)); major/critical put the batch on hold.

    ``kind`` is ``manual`` (reported by a person) or ``automatic``: opened by a rule of a
    domain above batches on the batch it affects (rooms: an environmental monitoring
    excursion, EU GMP Annex 1 §9). A batch already released or rejected keeps its status
    (``refresh_status`` never changes a decision): the deviation is recorded for QA's
    investigation of the product given."""
    if kind not in {k.value for k in DeviationKind}:
        raise field_error("kind", "must be manual or automatic")
    if severity not in {s.value for s in DeviationSeverity}:
        raise field_error("severity", "must be minor, major or critical")
    if not isinstance(description, str) or not description.strip():
        raise field_error("description", "describe what happened")
    user = load_user(session, user_id)
    batch = get_batch(session, batch_number, for_update=True)
    if step_code is not None and definition_of_batch(batch).step(step_code) is None:
        raise field_error("step_code", f"process {batch.process.key} has no step {step_code!r}")
    deviation = Deviation(
        number=deviation_number(session, batch), batch_id=batch.id,
        batch_number=batch.batch_number, kind=kind, severity=severity,
        status=DeviationStatus.OPEN.value, description=description.strip(),
        step_code=step_code, opened_at=utcnow(), opened_by=user.id,
    )
    session.add(deviation)
    session.flush()
    refresh_status(session, batch)
    session.flush()
    return deviation


def _qa_signature(
    session: Session, deviation: Deviation, user: User, signature: SignatureInput, action: str,
    text_: str, severity: str | None,
) -> Signature:
    return signatures.sign(
        session, user, signature, entity_type="deviation", entity_id=deviation.number,
        content={"deviation": deviation.number, "action": action, "text": text_,
                 "severity": severity or deviation.severity},
        meanings={Meaning.REVIEWED.value, Meaning.APPROVED.value},
    )


def assess_deviation(
    session: Session,
    ref: str | int,
    *,
    assessment: str,
    user_id: int,
    signature: SignatureInput,
    severity: str | None = None,
) -> Deviation:
    """QA's signed impact assessment; the batch leaves on_hold when nothing else holds it."""
    if not isinstance(assessment, str) or not assessment.strip():
        raise field_error("assessment", "the assessment must be written")
    if severity is not None and severity not in {s.value for s in DeviationSeverity}:
        raise field_error("severity", "must be minor, major or critical")
    user = load_user(session, user_id)
    if not user.has_role("qa"):
        raise Forbidden("assessing a deviation needs the role qa")
    deviation = get_deviation(session, ref)
    batch = get_batch(session, deviation.batch_number, for_update=True)
    session.refresh(deviation)
    if deviation.status != DeviationStatus.OPEN:
        raise InvalidTransition(f"deviation {deviation.number} is already {deviation.status}")
    signed = _qa_signature(session, deviation, user, signature, "assess", assessment.strip(),
                           severity)
    with audit.reason(session, signature.reason):
        deviation.assessment = assessment.strip()
        if severity is not None:
            deviation.severity = severity
        deviation.status = DeviationStatus.ASSESSED.value
        deviation.assessed_at = signed.signed_at
        deviation.assessed_by = user.id
        deviation.assessment_signature = signed
        session.flush()
        refresh_status(session, batch)
        session.flush()
    return deviation


def close_deviation(
    session: Session, ref: str | int, *, closure: str, user_id: int, signature: SignatureInput
) -> Deviation:
    """QA closes an assessed deviation with a signed conclusion (CAPA done or not needed)."""
    if not isinstance(closure, str) or not closure.strip():
        raise field_error("closure", "the closure conclusion must be written")
    user = load_user(session, user_id)
    if not user.has_role("qa"):
        raise Forbidden("closing a deviation needs the role qa")
    deviation = get_deviation(session, ref)
    batch = get_batch(session, deviation.batch_number, for_update=True)
    session.refresh(deviation)
    if deviation.status != DeviationStatus.ASSESSED:
        raise InvalidTransition(
            f"deviation {deviation.number} is {deviation.status}: only an assessed deviation "
            "can be closed"
        )
    signed = _qa_signature(session, deviation, user, signature, "close", closure.strip(), None)
    with audit.reason(session, signature.reason):
        deviation.closure = closure.strip()
        deviation.status = DeviationStatus.CLOSED.value
        deviation.closed_at = signed.signed_at
        deviation.closed_by = user.id
        deviation.closure_signature = signed
        session.flush()
        refresh_status(session, batch)
        session.flush()
    return deviation

