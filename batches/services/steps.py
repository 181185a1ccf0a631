"""Step records as read: every version, the current ones, the states of the steps and
the order rule (SPEC §3). Reads that run on every write are single indexed queries."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from batches.models import Batch, StepRecord
from batches.services.batches import definition_of_batch
from batches.services.lifecycle import recording_open
from gmp_mes import paging
from processes.definitions import ProcessDefinition, Step


def all_records(session: Session, batch: Batch) -> list[StepRecord]:
    """Every version of every record, in process order (corrections after their original)."""
    return list(session.scalars(
        select(StepRecord).where(StepRecord.batch_id == batch.id).order_by(
            StepRecord.step_index, StepRecord.occurrence, StepRecord.version
        )
    ))


def current_records(session: Session, batch: Batch) -> list[StepRecord]:
    """The latest version of each record (what the batch record states today)."""
    latest: dict[tuple[str, int], StepRecord] = {}
    for record in all_records(session, batch):
        latest[(record.step_code, record.occurrence)] = record
    return list(latest.values())


@dataclass
class StepState:
    step: Step
    records: list[StepRecord]
    superseded: list[StepRecord]
    allowed: bool
    done: bool


def last_step_index(session: Session, batch: Batch) -> int:
    """The process index of the furthest step recorded (-1: none), one indexed read
    (ix_step_record_batch) whatever the number of records."""
    found = session.scalar(
        select(StepRecord.step_index).where(StepRecord.batch_id == batch.id)
        .order_by(StepRecord.step_index.desc()).limit(1)
    )
    return -1 if found is None else found


def recorded_steps(session: Session, batch: Batch, definition: ProcessDefinition) -> set[str]:
    """The codes of the steps that have a record: one statement of one indexed EXISTS
    per step of the process (uq_step_record_version), never a scan of the records."""
    steps = list(definition.steps)
    if not steps:
        return set()
    row = session.execute(select(*[
        select(StepRecord.id).where(StepRecord.batch_id == batch.id,
                                    StepRecord.step_code == step.code).exists()
        for step in steps
    ])).one()
    return {step.code for step, present in zip(steps, row, strict=True) if present}


def last_occurrence(session: Session, batch: Batch, step_code: str) -> int:
    found = session.scalar(
        select(StepRecord.occurrence).where(StepRecord.batch_id == batch.id,
                                            StepRecord.step_code == step_code)
        .order_by(StepRecord.occurrence.desc()).limit(1)
    )
    return found or 0


def step_states(session: Session, batch: Batch) -> list[StepState]:
    """Every step of the process with all its records (the complete record)."""
    definition = definition_of_batch(batch)
    every = all_records(session, batch)
    current = {r.id for r in current_records(session, batch)}
    return _states(batch, definition, every, current, {r.step_code for r in every},
                   _last_index(every))


def paged_step_states(session: Session, batch: Batch, *, limit: int,
                      before: int | None = None) -> tuple[list[StepState], int | None]:
    """Every step with only the ``limit`` newest records (by id, before record ``before``)
    and the cursor of the older ones; ``done`` and ``allowed`` still hold for the whole
    batch. Its cost does not grow with the batch's records (issue 15)."""
    definition = definition_of_batch(batch)
    every, older = step_history_page(session, batch, limit=limit, before=before)
    return _states(batch, definition, every, _not_superseded(session, every),
                   recorded_steps(session, batch, definition),
                   last_step_index(session, batch)), older


def _states(batch: Batch, definition: ProcessDefinition, every: list[StepRecord],
            current: set[int], done: set[str], last: int) -> list[StepState]:
    allowed = set(allowed_after(definition, last)) if recording_open(batch.status) else set()
    by_step: dict[str, list[StepRecord]] = {}
    for r in every:
        by_step.setdefault(r.step_code, []).append(r)
    return [
        StepState(
            step=step,
            records=[r for r in by_step.get(step.code, []) if r.id in current],
            superseded=[r for r in by_step.get(step.code, []) if r.id not in current],
            allowed=step.code in allowed,
            done=step.code in done,
        )
        for step in definition.steps
    ]


def step_history_page(session: Session, batch: Batch, *, limit: int,
                      before: int | None = None) -> tuple[list[StepRecord], int | None]:
    """The ``limit`` newest step records (every version) before record ``before``, in
    process order, and the cursor of the older ones (None: no more). Keyset paging on
    the record id (gmp_mes.paging.keyset_page), as the custody trail pages."""
    rows, older = paging.keyset_page(
        session, select(StepRecord).where(StepRecord.batch_id == batch.id), StepRecord.id,
        limit=limit, before=before,
    )
    rows.sort(key=lambda r: (r.step_index, r.occurrence, r.version))
    return rows, older


def next_steps(session: Session, batch: Batch) -> list[Step]:
    """The steps that may be recorded now (SPEC §3), in process order."""
    if not recording_open(batch.status):
        return []
    definition = definition_of_batch(batch)
    return [step for code in allowed_after(definition, last_step_index(session, batch))
            if (step := definition.step(code)) is not None]


def _not_superseded(session: Session, records: list[StepRecord]) -> set[int]:
    """Ids of ``records`` that no correction superseded (ix_step_record_supersedes)."""
    ids = [r.id for r in records]
    if not ids:
        return set()
    superseded = set(session.scalars(
        select(StepRecord.supersedes_id).where(StepRecord.supersedes_id.in_(ids))
    ))
    return {i for i in ids if i not in superseded}


def _last_index(records: list[StepRecord]) -> int:
    return max((r.step_index for r in records), default=-1)


def allowed_after(definition: ProcessDefinition, last: int) -> list[str]:
    """SPEC §3: steps in file order; a repeatable step again until the next one starts
    (``last``: the index of the furthest step recorded, -1 for none)."""
    allowed = []
    if last >= 0 and definition.steps[last].repeatable:
        allowed.append(definition.steps[last].code)
    if last + 1 < len(definition.steps):
        allowed.append(definition.steps[last + 1].code)
    return allowed


def steps_complete(definition: ProcessDefinition, records: list[StepRecord]) -> bool:
    done = {r.step_code for r in records}
    return all(step.code in done for step in definition.steps)

