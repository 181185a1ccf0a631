"""Rules of batch manufacturing: batches, step records, deviations (process versions are
the processes domain's).

Services take a session, enforce every rule, flush and never commit. Each
change of a batch locks its row first (SELECT ... FOR UPDATE on PostgreSQL, the
write lock taken at BEGIN IMMEDIATE on SQLite), so two operators recording on
one batch at once are serialised and see each other's records.

Other domains reach this one only through the functions below; identity is
imported lazily because identity may import this module at its top.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

import identity.services as identity
import processes.services as processes
from batches.models import (
    ACTIVE_BATCH_STATUSES,
    FINAL_BATCH_STATUSES,
    Batch,
    BatchCounter,
    BatchStatus,
    Deviation,
    DeviationKind,
    DeviationSeverity,
    DeviationStatus,
    StepRecord,
    record_key,
)
from gmp_mes import audit, paging, signatures
from gmp_mes.audit import canonical_json
from gmp_mes.clock import utcnow
from gmp_mes.db import lock_rows
from gmp_mes.durations import format_duration
from gmp_mes.errors import (
    AlreadyExists,
    Expired,
    Forbidden,
    InvalidTransition,
    NotFound,
    ValidationFailed,
    conflict,
    field_error,
)
from gmp_mes.models import Meaning, User
from gmp_mes.physical import physical_problem
from gmp_mes.signatures import SignatureInput
from processes.definitions import (
    INVALID_OUTCOME,
    MAX_BAGS,
    ParamType,
    ProcessDefinition,
    QcSpec,
    Step,
    fmt_number,
    normal_outcome,
)

DEFAULT_PROCESS = "CART-AUTO"
MAX_TEXT = 500

__all__ = [
    "DEFAULT_PROCESS",
    "INVALID_OUTCOME",
    "QcSpec",
    "assess_deviation",
    "batch_coi",
    "batch_performers",
    "close_deviation",
    "correct_step",
    "final_product_item_ids",
    "get_batch",
    "get_deviation",
    "list_batches",
    "normal_outcome",
    "open_deviation",
    "qc_specs",
    "record_step",
    "release_blockers",
    "set_batch_status",
    "start_batch",
]


# --- batches ----------------------------------------------------------------------------

def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


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
    user = _user(session, user_id)
    code = process_code or DEFAULT_PROCESS
    if process_version is not None:
        process = processes.get_process_version(session, code, process_version)
        if not process.approved:
            raise conflict("process_not_approved",
                           f"process {process.key} is not approved by QA; it cannot be used")
    else:
        process = processes.newest_version(session, code, approved_only=True)
        if process is None:
            if processes.newest_version(session, code, approved_only=False) is None:
                raise NotFound(f"no process {code}")
            raise conflict("process_not_approved",
                           f"no version of process {code} is approved by QA yet")
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
                 limit: int | None = None, offset: int = 0) -> list[Batch]:
    statement = select(Batch).order_by(Batch.started_at.desc(), Batch.id.desc())
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


# --- step records -----------------------------------------------------------------------

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


def _last_occurrence(session: Session, batch: Batch, step_code: str) -> int:
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
    allowed = set(_allowed_after(definition, last)) if _recording_open(batch) else set()
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
    if not _recording_open(batch):
        return []
    definition = definition_of_batch(batch)
    return [step for code in _allowed_after(definition, last_step_index(session, batch))
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


def _recording_open(batch: Batch) -> bool:
    return batch.status in (BatchStatus.IN_PROCESS, BatchStatus.ON_HOLD)


def _last_index(records: list[StepRecord]) -> int:
    return max((r.step_index for r in records), default=-1)


def _allowed_after(definition: ProcessDefinition, last: int) -> list[str]:
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


@dataclass(frozen=True)
class VerifierInput:
    """The second person's signature on a critical step: user name plus password
    (21 CFR 11.200(a)(1)(i): both components when not in a continuous session)."""

    username: str
    password: str
    meaning: str = Meaning.VERIFIED.value
    reason: str | None = None


@dataclass
class StepOutcome:
    record: StepRecord
    deviations: list[Deviation] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)


def _check_values(step: Step, values: Any) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """Type- and unit-check the entered values; return (values, per-parameter results, bags).

    Wrong types, wrong units, unknown or missing parameters and physically impossible
    values (a negative count, 120 %, 1e308 cells) are entry errors (422).
    Values outside the limits are recorded as entered and evaluated, never rejected
    or clamped (EU GMP Chapter 4.8: the record shows what was actually found).
    """
    if not isinstance(values, dict):
        raise field_error("values", "must be an object of parameter code -> value")
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    bags = 1
    for key in values:
        if step.parameter(key) is None and not (step.creates and key == "bags"):
            known = ", ".join(p.code for p in step.parameters) or "none"
            errors[f"values.{key}"] = [f"unknown parameter of step {step.code} (known: {known})"]
    if step.creates:
        raw_bags = values.get("bags", 1)
        if isinstance(raw_bags, bool) or not isinstance(raw_bags, int | float) or (
            isinstance(raw_bags, float) and not raw_bags.is_integer()
        ):
            errors["values.bags"] = ["must be a whole number"]
        elif not 1 <= raw_bags <= MAX_BAGS:
            errors["values.bags"] = [f"must be between 1 and {MAX_BAGS}"]
        else:
            bags = int(raw_bags)
            clean["bags"] = bags
    results: list[dict[str, Any]] = []
    for param in step.parameters:
        name = f"values.{param.code}"
        if param.code not in values or values[param.code] is None:
            if param.required:
                errors[name] = ["missing required value"]
            continue
        raw = values[param.code]
        if isinstance(raw, dict):
            unknown = set(raw) - {"value", "unit"}
            if unknown or "value" not in raw:
                errors[name] = ['must be a value or {"value": ..., "unit": ...}']
                continue
            unit = raw.get("unit")
            if unit is not None and (not isinstance(unit, str) or unit.strip() != param.unit):
                errors[name] = [f"unit must be {param.unit!r}" if param.unit else "has no unit"]
                continue
            raw = raw["value"]
        value, problem = _typed(param.type, raw)
        if not problem and param.numeric:
            # Physical range before limits (issue 13): an impossible value is an entry
            # error, never a recorded result evaluated against the limits.
            problem = physical_problem(value, param.unit)
        if problem:
            errors[name] = [problem]
            continue
        clean[param.code] = value
        results.append({
            "code": param.code, "name": param.name, "value": value, "unit": param.unit,
            "limits": param.limits_text(), "in_limits": param.within_limits(value),
            "severity": param.severity,
        })
    if errors:
        raise ValidationFailed(f"step {step.code}: values refused", errors=errors)
    return clean, results, bags


def _typed(kind: str, raw: Any) -> tuple[Any, str | None]:
    if kind == ParamType.BOOLEAN:
        return (raw, None) if isinstance(raw, bool) else (None, "must be true or false")
    if kind == ParamType.TEXT:
        if not isinstance(raw, str) or not raw.strip():
            return None, "must be non-empty text"
        if len(raw) > MAX_TEXT:
            return None, f"must be at most {MAX_TEXT} characters"
        return raw.strip(), None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None, "must be a number"
    if not math.isfinite(raw):
        return None, "must be a finite number"
    if kind == ParamType.INTEGER:
        if isinstance(raw, float) and not raw.is_integer():
            return None, "must be a whole number"
        return int(raw), None
    return raw, None


def _sign_step(
    session: Session,
    user: User,
    signature: SignatureInput,
    verifier: VerifierInput | None,
    step: Step,
    key: str,
    content: dict[str, Any],
) -> tuple[Any, Any]:
    performed = signatures.sign(session, user, signature, entity_type="step_record",
                                entity_id=key, content=content,
                                meanings={Meaning.PERFORMED.value})
    if verifier is None:
        if step.critical:
            raise field_error("verifier", f"step {step.code} is critical: a second person "
                                          "must verify it with their own signature")
        return performed, None
    # One generic refusal for the verifier field (no name, state or role oracle), and
    # lockout only within the failed-password rate limits (21 CFR 11.300(d)).
    verified = signatures.sign_as_second_person(
        session, verifier.username,
        SignatureInput(password=verifier.password, meaning=verifier.meaning,
                       reason=verifier.reason),
        performer=user, roles=("operator", "qa"),
        entity_type="step_record", entity_id=key, content=content,
        meanings={Meaning.VERIFIED.value},
    )
    return performed, verified


def signed_content(
    key: str, values: dict[str, Any], performed_at: datetime, *,
    supersedes: str | None = None, reason: str | None = None,
    identity_scan: dict[str, Any] | None = None,
    label_scans: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What the performer and the verifier sign (21 CFR 11.70: the signature is bound
    to this content by its digest, so a later change no longer matches)."""
    content: dict[str, Any] = {"record": key, "values": values,
                               "performed_at": audit.format_time(performed_at)}
    if supersedes is not None:
        content.update(supersedes=supersedes, reason=reason)
    if identity_scan is not None:
        content["identity_scan"] = identity_scan
    if label_scans is not None:
        content["label_scans"] = label_scans
    return content


def signature_binds(session: Session, record: StepRecord) -> bool:
    """True while the stored record is exactly what its signatures signed."""
    supersedes = session.get(StepRecord, record.supersedes_id) if record.supersedes_id else None
    content = signed_content(
        record.key, record.values, record.performed_at,
        supersedes=supersedes.key if supersedes else None,
        reason=record.correction_reason if supersedes else None,
        identity_scan=record.scan, label_scans=record.scans,
    )
    signed = [record.signature] + ([record.verifier_signature]
                                   if record.verifier_signature else [])
    return all(signatures.still_binds(sig, content) for sig in signed)


def record_step(
    session: Session,
    batch_number: str,
    step_code: str,
    *,
    values: Any,
    user_id: int,
    signature: SignatureInput,
    verifier: VerifierInput | None = None,
    scan: str | None = None,
    scans: list[str] | None = None,
) -> StepOutcome:
    """Record one execution of a step, signed; out-of-limit values open deviations.

    ``scans``: the labels scanned by a label-check step (``scans = "final_product"``),
    one per bag: each checked like ``scan``, and the step refused (409
    ``bags_not_scanned``) until every final-product bag of the batch is among them.

    ``scan``: a label scanned as the step's identity check (the bag at receipt), checked
    against the batch (its COI, its material) and recorded with the step, inside what is
    signed; a mismatch refuses the step (409 ``coi_mismatch``, ``wrong_batch``, ...).
    The step that consumes the starting material (SPEC §2) ends its ``in_process``."""
    user = _user(session, user_id)
    batch = get_batch(session, batch_number, for_update=True)
    definition = definition_of_batch(batch)
    step = definition.step(step_code)
    if step is None:
        raise NotFound(f"process {batch.process.key} has no step {step_code!r}")
    if not _recording_open(batch):
        raise InvalidTransition(
            f"batch {batch_number} is {batch.status}: no more steps can be recorded"
        )
    # Only what the order rule needs, each an indexed read: recording stays as fast on
    # the 1,000th record as on the first (issue 15).
    allowed = _allowed_after(definition, last_step_index(session, batch))
    if step.code not in allowed:
        done = recorded_steps(session, batch, definition)
        why = (f"step {step.code} is already recorded; a change is a correction"
               if step.code in done and not step.repeatable
               else f"step {step.code} is out of order")
        raise InvalidTransition(
            f"{why}: the next step is {' or '.join(allowed) or 'none'}",
            extra={"next_steps": allowed},
        )
    clean, results, bags = _check_values(step, values)
    occurrence = 1 + _last_occurrence(session, batch, step.code)
    consumes = step.code == definition.consuming_step.code and occurrence == 1
    if consumes:
        # Row locks before the first audited write (the scan, the signatures).
        identity.get_item(session, batch.starting_item_id, for_update=True)
    if scans is not None and step.scans is None:
        raise field_error("scans", f"step {step.code} checks no labels: leave scans out")
    checked = _identity_scan(session, batch, step, user, scan) if scan is not None else None
    labels = (_label_scans(session, batch, step, user, scans or [])
              if step.scans is not None else None)
    now = utcnow()
    key = record_key(batch.batch_number, step.code, occurrence, 1)
    content = signed_content(key, clean, now, identity_scan=checked, label_scans=labels)
    performed, verified = _sign_step(session, user, signature, verifier, step, key, content)
    record = StepRecord(
        batch_id=batch.id, batch_number=batch.batch_number, step_code=step.code,
        step_index=step.index, occurrence=occurrence, version=1,
        values_json=canonical_json(clean), results_json=canonical_json(results),
        in_limits=all(r["in_limits"] for r in results), performed_at=now,
        recorded_by=user.id, signature=performed, verifier_signature=verified,
        identity_scan=canonical_json(checked) if checked is not None else None,
        label_scans=canonical_json(labels) if labels is not None else None,
    )
    outcome = StepOutcome(record)
    if consumes:
        identity.consume_starting_material(session, batch.starting_item_id,
                                           batch.batch_number, step.code)
    if step.creates == "final_product":
        outcome.items = _fill(session, batch, definition, step, bags, now)
        record.created_items = json.dumps([item.item_id for item in outcome.items])
    session.add(record)
    session.flush()
    outcome.deviations = _open_limit_deviations(session, batch, step, record, results, user)
    if step.index == len(definition.steps) - 1:
        batch.completed_at = now
    _refresh_status(session, batch, definition=definition)
    session.flush()
    return outcome


def _label_scans(
    session: Session, batch: Batch, step: Step, user: User, payloads: list[str]
) -> list[dict[str, Any]]:
    """The label check (``scans = "final_product"``): every scan checked like the step's
    ``scan`` (a refused one refuses the step with its code), each must be a different
    final-product bag of this batch, and every such bag must be scanned."""
    if not isinstance(payloads, list) or not all(isinstance(p, str) for p in payloads):
        raise field_error("scans", "must be a list of scanned labels")
    bags = final_product_item_ids(session, batch.batch_number)
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for payload in payloads:
        result = _identity_scan(session, batch, step, user, payload, field_name="scans")
        item_id = result["item_id"]
        if item_id not in bags:
            raise conflict(
                "label_mismatch",
                f"step {step.code}: {item_id} is a {result['kind']}, not a final-product bag "
                f"of batch {batch.batch_number}; scan the labels of its bags",
                extra={"item_id": item_id}, errors={"scans": [
                    f"{item_id} is not a bag of this batch"]},
            )
        if item_id in seen:
            raise field_error("scans", f"bag {item_id} is scanned twice: scan each bag once")
        seen.add(item_id)
        checked.append(result)
    missing = [item_id for item_id in bags if item_id not in seen]
    if missing:
        message = (f"scan the label of every bag: still to scan {', '.join(missing)}"
                   if bags else "the batch has no final-product bags to check")
        raise conflict("bags_not_scanned", f"step {step.code}: {message}",
                       extra={"missing": missing}, errors={"scans": [message]})
    return checked


def _identity_scan(
    session: Session, batch: Batch, step: Step, user: User, payload: str, *,
    field_name: str = "scan",
) -> dict[str, Any]:
    """Check a scanned label against the batch as the scan station does (signature, not
    voided, COI, this batch's material, status), recording the scan; refuse the step when
    it is not OK. A refused scan is still recorded, in its own transaction."""
    if not isinstance(payload, str) or not payload.strip():
        raise field_error(field_name, "scan the bag's label (or leave the field out)"
                          if field_name == "scan" else "an empty scan: scan the bag's label")
    workstation = f"batch {batch.batch_number} step {step.code}"
    result = identity.scan(session, payload, user=user, site_code=user.site.code,
                           workstation=workstation, batch_number=batch.batch_number)
    if not result.ok:
        codes = [r["code"] for r in result.reasons]
        code = "coi_mismatch" if "coi_mismatch" in codes else codes[0]
        actor = audit.Actor(user.username, user.id, user.full_name)
        site_code, batch_number = user.site.code, batch.batch_number

        def record_refused_scan(s: Session) -> None:
            s.info["actor"] = actor
            identity.scan(s, payload, user=user, site_code=site_code,
                          workstation=workstation, batch_number=batch_number)

        raise conflict(
            code,
            f"step {step.code}: the scanned label is refused for batch {batch.batch_number}: "
            + "; ".join(r["message"] for r in result.reasons),
            extra={"reasons": result.reasons}, follow_up=record_refused_scan,
            errors=None if field_name == "scan" else {field_name: [
                "; ".join(r["message"] for r in result.reasons)]},
        )
    assert result.item is not None
    return {"item_id": result.item.item_id, "kind": result.item.kind,
            "coi_id": result.coi_id, "status": result.status,
            "custody_event_id": result.event_id}


def _fill(
    session: Session, batch: Batch, definition: ProcessDefinition, step: Step, bags: int,
    now: datetime,
) -> list[Any]:
    """SPEC §3: the fill step creates the final-product bags, children of the starting
    material, in quarantine, expiring shelf_life.final_product after the step."""
    expires_at = now + definition.final_product_shelf_life if step.expiry_from else None
    post_thaw = format_duration(definition.post_thaw) if definition.post_thaw else None
    return [
        identity.create_item(
            session, kind="final_product", coi_id=batch.coi_id, site_code=batch.site_code,
            status="quarantine", parent_ids=(batch.starting_item_id,),
            batch_number=batch.batch_number,
            description=f"{definition.name}, bag {n} of {bags}",
            expires_at=expires_at, expiry_warnings=definition.warn_before,
            post_thaw_window=post_thaw,
        )
        for n in range(1, bags + 1)
    ]


def _deviation_number(session: Session, batch: Batch) -> str:
    count = session.scalar(select(func.count()).select_from(Deviation).where(
        Deviation.batch_id == batch.id
    )) or 0
    return f"{batch.batch_number}-D{count + 1:02d}"


def _open_limit_deviations(
    session: Session, batch: Batch, step: Step, record: StepRecord,
    results: list[dict[str, Any]], user: User, *, previous: dict[str, Any] | None = None,
) -> list[Deviation]:
    opened = []
    for result in results:
        if result["in_limits"]:
            continue
        if previous is not None and previous.get(result["code"]) == result["value"]:
            continue  # unchanged by the correction: its deviation is already open
        value = result["value"]
        shown = fmt_number(value) if isinstance(value, float | int) and not isinstance(
            value, bool) else json.dumps(value)
        unit = f" {result['unit']}" if result["unit"] else ""
        deviation = Deviation(
            number=_deviation_number(session, batch), batch_id=batch.id,
            batch_number=batch.batch_number, kind=DeviationKind.AUTOMATIC.value,
            severity=result["severity"], status=DeviationStatus.OPEN.value,
            description=(
                f"{step.name} ({record.step_code} #{record.occurrence}): {result['name']} = "
                f"{shown}{unit}, outside the limits {result['limits']}"
            ),
            step_record_id=record.id, step_code=record.step_code, parameter=result["code"],
            opened_at=record.performed_at, opened_by=user.id,
        )
        session.add(deviation)
        session.flush()
        opened.append(deviation)
    return opened


def correct_step(
    session: Session,
    batch_number: str,
    step_code: str,
    *,
    values: Any,
    reason: str,
    user_id: int,
    signature: SignatureInput,
    occurrence: int | None = None,
    verifier: VerifierInput | None = None,
) -> StepOutcome:
    """A correction is a new signed version with a reason; the original stays (11.10(e))."""
    if not isinstance(reason, str) or not reason.strip():
        raise field_error("reason", "a correction needs a reason")
    user = _user(session, user_id)
    batch = get_batch(session, batch_number, for_update=True)
    definition = definition_of_batch(batch)
    step = definition.step(step_code)
    if step is None:
        raise NotFound(f"process {batch.process.key} has no step {step_code!r}")
    if batch.status not in (s.value for s in ACTIVE_BATCH_STATUSES):
        raise InvalidTransition(
            f"batch {batch_number} is {batch.status}: its record can no longer be corrected"
        )
    # The current version of the record (the highest occurrence by default): one indexed
    # read (uq_step_record_version), not every record of the batch.
    mine = select(StepRecord).where(StepRecord.batch_id == batch.id,
                                    StepRecord.step_code == step.code)
    if occurrence is not None:
        mine = mine.where(StepRecord.occurrence == occurrence)
    original = session.scalar(
        mine.order_by(StepRecord.occurrence.desc(), StepRecord.version.desc()).limit(1))
    if original is None:
        if occurrence is None or step.code not in recorded_steps(session, batch, definition):
            raise InvalidTransition(f"step {step.code} has no record to correct")
        raise NotFound(f"step {step.code} has no record #{occurrence}")
    clean, results, bags = _check_values(step, values)
    if step.creates and bags != original.values.get("bags", 1):
        raise InvalidTransition(
            "the number of bags filled cannot be corrected: the bags exist; destroy or "
            "record them through their items"
        )
    now = utcnow()
    version = original.version + 1
    key = record_key(batch.batch_number, step.code, original.occurrence, version)
    content = signed_content(key, clean, now, supersedes=original.key, reason=reason.strip())
    performed, verified = _sign_step(session, user, signature, verifier, step, key, content)
    record = StepRecord(
        batch_id=batch.id, batch_number=batch.batch_number, step_code=step.code,
        step_index=step.index, occurrence=original.occurrence, version=version,
        supersedes_id=original.id, correction_reason=reason.strip(),
        values_json=canonical_json(clean), results_json=canonical_json(results),
        in_limits=all(r["in_limits"] for r in results), created_items=original.created_items,
        performed_at=now, recorded_by=user.id, signature=performed, verifier_signature=verified,
    )
    with audit.reason(session, f"correction: {reason.strip()}"):
        session.add(record)
        session.flush()
        deviations = _open_limit_deviations(session, batch, step, record, results, user,
                                            previous=original.values)
        _refresh_status(session, batch, definition=definition)
        session.flush()
    return StepOutcome(record, deviations)


# --- deviations ---------------------------------------------------------------------------

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
) -> Deviation:
    """A reported event (EU GMP Chapter 1.4(xiv)); major/critical put the batch on hold."""
    if severity not in {s.value for s in DeviationSeverity}:
        raise field_error("severity", "must be minor, major or critical")
    if not isinstance(description, str) or not description.strip():
        raise field_error("description", "describe what happened")
    user = _user(session, user_id)
    batch = get_batch(session, batch_number, for_update=True)
    if step_code is not None and definition_of_batch(batch).step(step_code) is None:
        raise field_error("step_code", f"process {batch.process.key} has no step {step_code!r}")
    deviation = Deviation(
        number=_deviation_number(session, batch), batch_id=batch.id,
        batch_number=batch.batch_number, kind=DeviationKind.MANUAL.value, severity=severity,
        status=DeviationStatus.OPEN.value, description=description.strip(),
        step_code=step_code, opened_at=utcnow(), opened_by=user.id,
    )
    session.add(deviation)
    session.flush()
    _refresh_status(session, batch)
    session.flush()
    return deviation


def _qa_signature(
    session: Session, deviation: Deviation, user: User, signature: SignatureInput, action: str,
    text_: str, severity: str | None,
) -> Any:
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
    user = _user(session, user_id)
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
        _refresh_status(session, batch)
        session.flush()
    return deviation


def close_deviation(
    session: Session, ref: str | int, *, closure: str, user_id: int, signature: SignatureInput
) -> Deviation:
    """QA closes an assessed deviation with a signed conclusion (CAPA done or not needed)."""
    if not isinstance(closure, str) or not closure.strip():
        raise field_error("closure", "the closure conclusion must be written")
    user = _user(session, user_id)
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
        _refresh_status(session, batch)
        session.flush()
    return deviation


# --- status ----------------------------------------------------------------------------

_TRANSITIONS: dict[str, frozenset[str]] = {
    BatchStatus.IN_PROCESS: frozenset({
        BatchStatus.ON_HOLD, BatchStatus.AWAITING_RELEASE, BatchStatus.REJECTED}),
    BatchStatus.ON_HOLD: frozenset({
        BatchStatus.IN_PROCESS, BatchStatus.AWAITING_RELEASE, BatchStatus.REJECTED}),
    BatchStatus.AWAITING_RELEASE: frozenset({
        BatchStatus.ON_HOLD, BatchStatus.RELEASED, BatchStatus.CONDITIONALLY_RELEASED,
        BatchStatus.REJECTED}),
    BatchStatus.CONDITIONALLY_RELEASED: frozenset({BatchStatus.RELEASED, BatchStatus.REJECTED}),
    BatchStatus.RELEASED: frozenset(),
    BatchStatus.REJECTED: frozenset(),
}


def _holding_deviation(session: Session, batch: Batch) -> bool:
    """SPEC §2: an open (unassessed) major or critical deviation holds the batch
    (Deviation.holds_batch), one indexed read (ix_deviation_batch_status)."""
    return session.scalar(select(select(Deviation.id).where(
        Deviation.batch_id == batch.id, Deviation.status == DeviationStatus.OPEN.value,
        Deviation.severity != DeviationSeverity.MINOR.value,
    ).exists())) or False


def _refresh_status(
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
        if status in (BatchStatus.IN_PROCESS, BatchStatus.ON_HOLD, BatchStatus.AWAITING_RELEASE):
            return batch
        # SPEC §5: never two release (or rejection) decisions on one batch.
        raise InvalidTransition(f"batch {batch_number} is already {status}")
    if status not in _TRANSITIONS[BatchStatus(batch.status)]:
        raise InvalidTransition(f"batch {batch_number} cannot go from {batch.status} to {status}")
    with audit.reason(session, reason):
        batch.status = status
        batch.status_reason = reason
        session.flush()
    return batch


# --- interface for qc and identity -------------------------------------------------------

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
        if _expired(identity.get_item(session, item_id), now)
    ]
    if expired:
        blockers.append(("expired", f"final product expired: {', '.join(expired)}"))
    elif not final_product_item_ids(session, batch_number):
        starting = identity.get_item(session, batch.starting_item_id)
        if starting.status == "expired":
            blockers.append(("expired", f"starting material {starting.item_id} expired"))
    return blockers


def _expired(item: Any, now: datetime) -> bool:
    return item.status == "expired" or (item.expires_at is not None and item.expires_at <= now)


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
    return batch.status in FINAL_BATCH_STATUSES


# --- scheduler: deviations left open too long ---------------------------------------------

def alert_overdue_deviations(session: Session, older_than: timedelta) -> list[str]:
    """Raise one alert per deviation not closed ``older_than`` after it was opened
    (EU GMP Chapter 1.4(xiv): deviations investigated in time). One alert per cause:
    reruns and overlapping sweeps never duplicate it."""
    from gmp_mes.alerts import AlertKind, AlertSpec, raise_alert

    limit = utcnow() - older_than
    overdue = session.scalars(select(Deviation).where(
        Deviation.status != DeviationStatus.CLOSED.value, Deviation.opened_at <= limit,
    ).order_by(Deviation.id))
    lines = []
    for deviation in overdue:
        batch = get_batch(session, deviation.batch_number)
        alert = raise_alert(session, AlertSpec(
            cause=f"{AlertKind.DEVIATION_OPEN.value}:{deviation.number}",
            kind=AlertKind.DEVIATION_OPEN.value,
            severity="critical" if deviation.severity == DeviationSeverity.CRITICAL else "major",
            subject_type="deviation", subject_id=deviation.number,
            message=(f"deviation {deviation.number} ({deviation.severity}, {deviation.status}) "
                     f"of batch {deviation.batch_number} is open for more than "
                     f"{format_duration(older_than)}"),
            roles=("qa",), site_code=batch.site_code,
            due_at=deviation.opened_at + older_than,
        ))
        if alert is not None:
            lines.append(f"alert: deviation {deviation.number} open too long")
    return lines
