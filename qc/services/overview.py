"""The QC overview of a batch: per test its status, due time and result versions."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Literal

from sqlalchemy.orm import Session

from batches import services as batches
from gmp_mes.clock import utcnow
from gmp_mes.durations import format_duration
from gmp_mes.models import Signature
from qc.models import QcResult
from qc.services._common import (
    INVALID_OUTCOME,
    _head,
    _states,
    _TestState,
)

TestStatus = Literal["required", "pending", "passed", "failed"]


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



@dataclass(frozen=True)
class ResultVersion:
    """One version of a test's result as the overview shows it, with its signatures
    (``qc.schemas.QcResultSchema`` dumps it)."""

    id: int
    batch_number: str
    test: str
    version: int
    supersedes_id: int | None
    correction_reason: str | None
    value: float | None
    outcome: str | None
    unit: str | None
    method: str | None
    specification: str
    passed: bool
    sample_item_id: str | None
    recorded_at: datetime
    current: bool
    superseded: bool
    invalid: bool
    invalid_reason: str | None
    invalidation_signature: Signature | None
    signature: Signature
    review_signature: Signature | None


@dataclass(frozen=True)
class ResultAnswer(ResultVersion):
    """One result version as the API answers a write on it: with its batch's status."""

    batch_status: str


def result_version(result: QcResult, state: _TestState | None = None) -> ResultVersion:
    invalid = state.invalid.get(result.id) if state else None
    review = state.reviews.get(result.id) if state else None
    return ResultVersion(
        id=result.id,
        batch_number=result.batch_number,
        test=result.test,
        version=result.version,
        supersedes_id=result.supersedes_id,
        correction_reason=result.correction_reason,
        value=result.value,
        outcome=result.outcome,
        unit=result.unit,
        method=result.method,
        specification=result.specification,
        passed=result.passed,
        sample_item_id=result.sample_item_id,
        recorded_at=result.recorded_at,
        current=bool(state and state.current is not None and state.current.id == result.id),
        superseded=bool(state and result.id in state.superseded),
        invalid=invalid is not None or result.outcome == INVALID_OUTCOME,
        invalid_reason=invalid.reason if invalid else (
            "recorded as invalid: the assay gave no valid result"
            if result.outcome == INVALID_OUTCOME else None),
        invalidation_signature=invalid.signature if invalid else None,
        signature=result.signature,
        review_signature=review.signature if review else None,
    )


@dataclass(frozen=True)
class TestRow:
    """One test of the batch's release specification: its status, due time and every
    result version (``qc.schemas.QcTestSchema`` dumps it)."""

    __test__ = False  # not a pytest class

    test: str
    method: str | None
    unit: str | None
    specification: str
    min: float | None
    max: float | None
    accept: str | None
    outcomes: list[str]
    release_before_result: bool
    time_to_result: str | None
    required: bool
    status: TestStatus
    pending: bool
    passed: bool
    failed: bool
    invalid: int
    due_at: datetime | None
    overdue: bool
    current_result_id: int | None
    results: list[ResultVersion] = field(default_factory=list)


def result_view(session: Session, result_id: int) -> ResultAnswer:
    """One result version as the API answers it, with its batch's status now."""
    result = _head(session, result_id)
    state = _states(session, result.batch_number)[result.test]
    version = result_version(result, state)
    return ResultAnswer(**{f.name: getattr(version, f.name) for f in fields(version)},
                        batch_status=batches.get_batch(session, result.batch_number).status)


def qc_overview(session: Session, batch_number: str) -> list[TestRow]:
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
        status: TestStatus
        if current is not None:
            status = "passed" if current.passed else "failed"
        else:
            status = "pending" if sampled is not None else "required"
        rows.append(TestRow(
            test=spec.test,
            method=spec.method,
            unit=spec.unit,
            specification=spec.spec_text(),
            min=spec.min,
            max=spec.max,
            accept=spec.accept,
            outcomes=list(spec.outcomes),
            release_before_result=spec.release_before_result,
            time_to_result=format_duration(spec.time_to_result)
            if spec.time_to_result else None,
            required=True,
            status=status,
            pending=current is None,
            passed=current is not None and current.passed,
            failed=current is not None and not current.passed,
            invalid=sum(1 for r in state.results if state.is_invalid(r)) if state else 0,
            due_at=due_at,
            overdue=bool(current is None and due_at is not None and due_at <= now),
            current_result_id=current.id if current else None,
            results=[result_version(r, state) for r in state.results] if state else [],
        ))
    return rows
