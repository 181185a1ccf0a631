"""What qc and identity ask of a batch: release blockers, performers, QC specs, bags."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

import identity.services as identity
from batches.models import Batch, StepRecord
from batches.services.batches import definition_of_batch, get_batch
from batches.services.deviations import deviations_of
from batches.services.lifecycle import is_final_status
from batches.services.steps import all_records, recorded_steps
from gmp_mes.clock import utcnow
from processes.definitions import QcSpec


def release_blockers(session: Session, batch_number: str) -> list[tuple[str, str]]:
    """Batch-side conditions of SPEC §5 that forbid release (empty list: none)."""
    batch = get_batch(session, batch_number)
    definition = definition_of_batch(batch)
    blockers: list[tuple[str, str]] = []
    done = recorded_steps(session, batch, definition)
    missing = [s.code for s in definition.steps if s.code not in done]
    if missing:
        blockers.append(("steps_incomplete", f"steps not recorded: {', '.join(missing)}"))
    open_ = [d for d in deviations_of(session, batch) if d.blocks_release]
    if open_:
        blockers.append(("open_deviation", "open major or critical deviation: "
                         + ", ".join(f"{d.number} ({d.severity}, {d.status})" for d in open_)))
    now = utcnow()
    expired = [
        item_id for item_id in final_product_item_ids(session, batch_number)
        if identity.is_expired(identity.get_item(session, item_id), now)
    ]
    if expired:
        blockers.append(("expired", f"final product expired: {', '.join(expired)}"))
    elif not final_product_item_ids(session, batch_number):
        starting = identity.get_item(session, batch.starting_item_id)
        if starting.status == "expired":
            blockers.append(("expired", f"starting material {starting.item_id} expired"))
    return blockers


def batch_performers(session: Session, batch_number: str) -> set[int]:
    """Everyone who started the batch, performed, recorded or verified a step record
    (SPEC §5.4 segregation of duties: none of them may release it)."""
    batch = get_batch(session, batch_number)
    people = {batch.started_by}
    for record in all_records(session, batch):
        people.add(record.recorded_by)
        people.add(record.signature.user_id)
        if record.verifier_signature is not None:
            people.add(record.verifier_signature.user_id)
    return people


def qc_specs(session: Session, batch_number: str) -> list[QcSpec]:
    """The release specification of the process version the batch is bound to."""
    return list(definition_of_batch(get_batch(session, batch_number)).qc)


def final_product_item_ids(session: Session, batch_number: str) -> list[str]:
    batch = get_batch(session, batch_number)
    # Only the records of the steps that create items (the fill), latest version of each.
    creating = [s.code for s in definition_of_batch(batch).steps if s.creates]
    latest: dict[tuple[str, int], StepRecord] = {}
    for record in session.scalars(select(StepRecord).where(
        StepRecord.batch_id == batch.id, StepRecord.step_code.in_(creating),
        StepRecord.created_items.is_not(None),
    ).order_by(StepRecord.step_index, StepRecord.occurrence, StepRecord.version)):
        latest[(record.step_code, record.occurrence)] = record
    ids: list[str] = []
    for record in latest.values():
        ids.extend(record.item_ids)
    return ids


def is_final(batch: Batch) -> bool:
    return is_final_status(batch.status)

