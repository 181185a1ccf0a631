"""Status changes: derived from steps and deviations (``refresh_status``), or QA's
release decision (``set_batch_status``), both along ``lifecycle.TRANSITIONS``."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from batches.models import (
    ACTIVE_BATCH_STATUSES,
    Batch,
    BatchStatus,
    Deviation,
    DeviationSeverity,
    DeviationStatus,
)
from batches.services.batches import definition_of_batch, get_batch
from batches.services.lifecycle import TRANSITIONS
from batches.services.steps import recorded_steps
from gmp_mes import audit
from gmp_mes.errors import InvalidTransition, field_error
from processes.definitions import ProcessDefinition


def _holding_deviation(session: Session, batch: Batch) -> bool:
    """SPEC §2: an open (unassessed) major or critical deviation holds the batch
    (Deviation.holds_batch), one indexed read (ix_deviation_batch_status)."""
    return session.scalar(select(select(Deviation.id).where(
        Deviation.batch_id == batch.id, Deviation.status == DeviationStatus.OPEN.value,
        Deviation.severity != DeviationSeverity.MINOR.value,
    ).exists())) or False


def refresh_status(
    session: Session, batch: Batch, *, definition: ProcessDefinition | None = None,
) -> None:
    """Derive in_process / on_hold / awaiting_release from steps and deviations.

    A release decision (released, conditionally released, rejected) is never
    touched here: only QA changes it, through set_batch_status.
    """
    if batch.status not in (s.value for s in ACTIVE_BATCH_STATUSES):
        return
    definition = definition or definition_of_batch(batch)
    held = _holding_deviation(session, batch)
    if held:
        target = BatchStatus.ON_HOLD
    elif len(recorded_steps(session, batch, definition)) == len(definition.steps):
        target = BatchStatus.AWAITING_RELEASE
    else:
        target = BatchStatus.IN_PROCESS
    if batch.status != target:
        why = ("an open major or critical deviation awaits QA assessment" if held
               else "all steps recorded" if target == BatchStatus.AWAITING_RELEASE
               else "no deviation holds the batch")
        batch.status = target.value
        batch.status_reason = why
        session.flush()


def set_batch_status(
    session: Session, batch_number: str, status: str, *, reason: str | None = None
) -> Batch:
    """The release decision's status change (called by qc); final states never change."""
    if status not in {s.value for s in BatchStatus}:
        raise field_error("status", f"unknown batch status {status!r}")
    batch = get_batch(session, batch_number, for_update=True)
    if status == batch.status:
        if status in ACTIVE_BATCH_STATUSES:
            return batch
        # SPEC §5: never two release (or rejection) decisions on one batch.
        raise InvalidTransition(f"batch {batch_number} is already {status}")
    if status not in TRANSITIONS[BatchStatus(batch.status)]:
        raise InvalidTransition(f"batch {batch_number} cannot go from {batch.status} to {status}")
    with audit.reason(session, reason):
        batch.status = status
        batch.status_reason = reason
        session.flush()
    return batch

