"""The QC overview of a batch: per test its status, due time and result versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from batches import services as batches
from gmp_mes.audit import format_time
from gmp_mes.clock import utcnow
from gmp_mes.durations import format_duration
from qc.models import QcResult
from qc.services._common import (
    INVALID_OUTCOME,
    _signature,
    _states,
    _TestState,
)


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
