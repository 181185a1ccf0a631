"""Batches: start one from received starting material, find and list them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

import identity.services as identity
import processes.services as processes
from batches.models import ACTIVE_BATCH_STATUSES, Batch, BatchCounter, BatchStatus
from batches.services._common import load_user
from gmp_mes import registry
from gmp_mes.clock import utcnow
from gmp_mes.db import lock_rows
from gmp_mes.durations import format_duration
from gmp_mes.errors import (
    AlreadyExists,
    Expired,
    InvalidTransition,
    NotFound,
    conflict,
    field_error,
)
from processes.definitions import ProcessDefinition

DEFAULT_PROCESS = "CART-AUTO"


def _next_batch_number(session: Session, process_code: str) -> str:
    """Human-readable and unique: CART-26-0001 (process prefix, year, sequence)."""
    prefix = f"{process_code.split('-')[0]}-{utcnow():%y}"
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(BatchCounter).values(prefix=prefix, last=0)
        .on_conflict_do_nothing(index_elements=["prefix"])
    )
    counter = session.scalar(
        select(BatchCounter).where(BatchCounter.prefix == prefix).with_for_update()
    )
    assert counter is not None
    counter.last += 1
    session.flush()
    return f"{prefix}-{counter.last:04d}"


def start_batch(
    session: Session,
    *,
    item_id: str,
    user_id: int,
    process_code: str | None = None,
    process_version: int | None = None,
) -> Batch:
    """Start a batch from one patient's starting material on an approved process version."""
    user = load_user(session, user_id)
    code = process_code or DEFAULT_PROCESS
    if process_version is not None:
        process = processes.get_process_version(session, code, process_version)
        if not process.approved:
            raise conflict("process_not_approved",
                           f"process {process.key} is not approved by QA; it cannot be used")
    else:
        process = processes.newest_approved(session, code)
    # The Start batch field takes a scanned label as well as an id (signature verified).
    item_id = identity.resolve_item_ref(session, item_id)
    item = identity.get_item(session, item_id, for_update=True)
    if item.kind != "starting_material":
        raise field_error("item_id", f"{item_id} is a {item.kind}, not starting material")
    now = utcnow()
    if item.status == "expired" or (item.expires_at is not None and item.expires_at <= now):
        raise Expired(
            f"starting material {item_id} is past its hold time "
            f"({format_duration(processes.definition_of(process).starting_material_hold)} after "
            "collection); it cannot start a batch"
        )
    if item.status == "blocked":
        raise conflict("blocked", f"starting material {item_id} is blocked")
    active = session.scalar(select(Batch).where(
        Batch.starting_item_id == item.item_id,
        Batch.status.in_([s.value for s in ACTIVE_BATCH_STATUSES]),
    ))
    if active is not None:
        raise AlreadyExists(
            f"starting material {item_id} already feeds batch {active.batch_number}"
        )
    site = user.site
    # Chain of custody into the cleanroom: only material received (custody ``receive``) at
    # the manufacturing site where the batch runs can start it.
    received_here = (item.status == "received" and site.kind == "manufacturing"
                     and item.site_code == site.code)
    if not received_here and item.status in ("available", "quarantine", "shipped", "received"):
        where = (f"it is {item.status} at {item.site_code}" if item.status != "shipped"
                 else f"it is in transit to {item.ship_to or '?'}")
        raise conflict(
            "not_received",
            f"starting material {item_id} has not been received at {site.code}"
            + ("" if site.kind == "manufacturing" else f" (a {site.kind} site)")
            + f": {where}; a batch starts only from material received at its manufacturing "
            "site",
        )
    if not identity.can_transition(item, "in_process"):
        raise InvalidTransition(
            f"starting material {item_id} is {item.status}: it cannot start a batch"
        )
    batch = Batch(
        batch_number=_next_batch_number(session, process.code),
        coi_id=item.coi_id,
        process_version_id=process.id,
        process_code=process.code,
        process_version=process.version,
        starting_item_id=item.item_id,
        site_code=user.site.code,
        status=BatchStatus.IN_PROCESS.value,
        started_at=now,
        started_by=user.id,
    )
    session.add(batch)
    session.flush()
    # The starting material is in_process for this batch until the step that consumes
    # it (SPEC §2): its label scans OK against this batch only, its hold time has been
    # met (the sweep leaves it alone), and it can never feed a second batch.
    identity.start_processing(session, item.item_id, batch.batch_number)
    started = registry.StartedBatch(
        batch_number=batch.batch_number, coi_id=batch.coi_id, process_code=batch.process_code,
        process_version=batch.process_version, started_at=now)
    for told in registry.batch_started.providers():  # schedule links the booking (SPEC §13)
        told(session, started)
    return batch


def get_batch(session: Session, batch_number: str, *, for_update: bool = False) -> Batch:
    statement = select(Batch).where(Batch.batch_number == batch_number)
    if for_update:
        # Lock the batch row only (not the joined process) and re-read what it holds now.
        statement = lock_rows(statement, Batch)
    batch = session.scalar(statement)
    if batch is None:
        raise NotFound(f"no batch {batch_number}")
    return batch


def batch_coi(session: Session, batch_number: str) -> str:
    return get_batch(session, batch_number).coi_id


def list_batches(session: Session, *, statuses: tuple[str, ...] = (),
                 limit: int | None = None, offset: int = 0,
                 process_code: str | None = None) -> list[Batch]:
    statement = select(Batch).order_by(Batch.started_at.desc(), Batch.id.desc())
    if process_code is not None:  # the batches of one process (control charts, SPEC §15)
        statement = statement.where(Batch.process_code == process_code)
    if statuses:
        statement = statement.where(Batch.status.in_(statuses))
    if limit is not None:
        statement = statement.limit(limit).offset(offset)
    return list(session.scalars(statement))


def find_batch_number(session: Session, text: str) -> str | None:
    """The batch number ``text`` names (typed in any case), or None."""
    key = text.strip().upper()
    if not key or len(key) > 40:
        return None
    return session.scalar(select(Batch.batch_number).where(Batch.batch_number == key))


def batches_of_coi(session: Session, coi_id: str) -> list[Batch]:
    return list(session.scalars(
        select(Batch).where(Batch.coi_id == coi_id).order_by(Batch.started_at)
    ))


def definition_of_batch(batch: Batch) -> ProcessDefinition:
    return processes.definition_of(batch.process)

