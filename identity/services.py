"""Chain of identity and chain of custody: the rules (SPEC §2, §4, §6).

Other domains call only the functions of this module (DEVELOPING.md). Services
take a session, flush and never commit; the request, command or job commits.

The item state machine lives in :func:`transition_item` and nowhere else.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, cast

from flask import current_app, has_app_context
from sqlalchemy import bindparam, func, select
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

import labels.services as labels
import processes.services as processes
from gmp_mes import audit, paging, registry
from gmp_mes.accounts import Person
from gmp_mes.alerts import AlertSpec, raise_alert
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.db import lock_rows
from gmp_mes.durations import parse_duration
from gmp_mes.errors import (
    AlreadyExists,
    CoiMismatch,
    DomainError,
    Expired,
    Forbidden,
    InvalidTransition,
    NotFound,
    ValidationFailed,
    conflict,
    field_error,
)
from gmp_mes.models import Meaning, Site, SiteKind, User
from gmp_mes.signatures import SignatureInput, sign
from identity import coi
from identity.models import (
    Administration,
    BedsideVerification,
    CoiCounter,
    Collection,
    CustodyAction,
    CustodyEvent,
    Item,
    ItemKind,
    ItemParent,
    ItemStatus,
    Patient,
)

__all__ = [
    "CODE_KINDS",
    "FINAL_STATUSES",
    "KIND_CODES",
    "ItemKind",
    "ItemStatus",
    "administer",
    "consume_starting_material",
    "create_item",
    "enrol_patient",
    "get_item",
    "get_patient",
    "items_of_batch",
    "label_data",
    "record_collection",
    "record_custody",
    "resolve_item_ref",
    "scan",
    "start_processing",
    "transition_item",
    "verify_bedside",
]

KIND_CODES: dict[str, str] = {
    ItemKind.STARTING_MATERIAL: "SM",
    ItemKind.INTERMEDIATE: "IM",
    ItemKind.FINAL_PRODUCT: "FP",
    ItemKind.QC_SAMPLE: "QS",
    ItemKind.RETENTION_SAMPLE: "RS",
    ItemKind.WRISTBAND: "WB",
}
CODE_KINDS: dict[str, str] = {code: kind.value for kind, code in KIND_CODES.items()}

S = ItemStatus
FINAL_STATUSES = frozenset({S.REJECTED, S.ADMINISTERED, S.EXPIRED, S.DESTROYED, S.CONSUMED})
# Statuses in which a final-product bag may be infused (SPEC §6).
INFUSIBLE = frozenset({S.RELEASED, S.CONDITIONALLY_RELEASED, S.RECEIVED, S.THAWED})

# SPEC §2: quarantine -> released | rejected; released -> shipped -> received -> thawed
# -> administered; any non-final status -> expired or destroyed. conditionally_released
# is a released state still waiting for a result; blocked is a quality block (SPEC §5).
# Administration is allowed from every infusible status (SPEC §6).
_ALWAYS = {S.EXPIRED, S.DESTROYED, S.BLOCKED}
TRANSITIONS: dict[str, frozenset[str]] = {
    S.QUARANTINE: frozenset({S.RELEASED, S.CONDITIONALLY_RELEASED, S.REJECTED, S.AVAILABLE,
                             S.IN_PROCESS, *_ALWAYS}),
    S.CONDITIONALLY_RELEASED: frozenset({S.RELEASED, S.REJECTED, S.SHIPPED, S.ADMINISTERED,
                                         *_ALWAYS}),
    S.RELEASED: frozenset({S.SHIPPED, S.ADMINISTERED, *_ALWAYS}),
    S.SHIPPED: frozenset({S.RECEIVED, *_ALWAYS}),
    # Starting material received at the cleanroom starts a batch from here (in_process,
    # or consumed when the batch takes it whole).
    S.RECEIVED: frozenset({S.THAWED, S.SHIPPED, S.ADMINISTERED, S.IN_PROCESS, S.AVAILABLE,
                           S.CONSUMED, *_ALWAYS}),
    S.THAWED: frozenset({S.ADMINISTERED, *_ALWAYS}),
    S.AVAILABLE: frozenset({S.IN_PROCESS, S.SHIPPED, S.CONSUMED, S.QUARANTINE, *_ALWAYS}),
    # A batch rejected before the step that consumes its starting material rejects it too.
    S.IN_PROCESS: frozenset({S.AVAILABLE, S.CONSUMED, S.QUARANTINE, S.REJECTED, *_ALWAYS}),
    S.BLOCKED: frozenset({S.REJECTED, S.DESTROYED, S.EXPIRED}),
}
# The statuses each kind of container can be in (documented in the OpenAPI document).
KIND_STATUSES: dict[str, frozenset[str]] = {
    ItemKind.FINAL_PRODUCT: frozenset({S.QUARANTINE, S.RELEASED, S.CONDITIONALLY_RELEASED,
                                       S.REJECTED, S.SHIPPED, S.RECEIVED, S.THAWED,
                                       S.ADMINISTERED, S.EXPIRED, S.DESTROYED, S.BLOCKED}),
    ItemKind.STARTING_MATERIAL: frozenset({S.AVAILABLE, S.QUARANTINE, S.SHIPPED, S.RECEIVED,
                                           S.IN_PROCESS, S.CONSUMED, S.REJECTED, S.EXPIRED,
                                           S.DESTROYED, S.BLOCKED}),
    ItemKind.INTERMEDIATE: frozenset({S.IN_PROCESS, S.AVAILABLE, S.QUARANTINE, S.SHIPPED,
                                      S.RECEIVED, S.CONSUMED, S.REJECTED, S.EXPIRED,
                                      S.DESTROYED, S.BLOCKED}),
    ItemKind.QC_SAMPLE: frozenset({S.AVAILABLE, S.IN_PROCESS, S.SHIPPED, S.RECEIVED,
                                   S.CONSUMED, S.EXPIRED, S.DESTROYED, S.BLOCKED}),
    ItemKind.RETENTION_SAMPLE: frozenset({S.AVAILABLE, S.SHIPPED, S.RECEIVED, S.CONSUMED,
                                          S.EXPIRED, S.DESTROYED, S.BLOCKED}),
    ItemKind.WRISTBAND: frozenset({S.AVAILABLE, S.DESTROYED}),
}
STORAGE: dict[str, str] = {
    ItemKind.FINAL_PRODUCT: "Store in vapour phase of liquid nitrogen <= -150 °C",
    ItemKind.STARTING_MATERIAL: "2-8 °C",
    ItemKind.INTERMEDIATE: "Per batch record",
    ItemKind.QC_SAMPLE: "2-8 °C",
    ItemKind.RETENTION_SAMPLE: "Store in vapour phase of liquid nitrogen <= -150 °C",
    ItemKind.WRISTBAND: "",
}

ITEM_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # base32: inside the QR alphanumeric set
# A collection time a few minutes ahead of the server clock is a device clock skew,
# not a future event; beyond that it is refused.
COLLECTION_CLOCK_SKEW = timedelta(minutes=2)
# Cryopreserved apheresis material may be used years after collection, never decades:
# an older date is a typing error (0001-01-01), refused (issue 13, Annex 11 §6).
MAX_COLLECTION_AGE = timedelta(days=10 * 366)
MAX_GENEALOGY = 500


# --- helpers ----------------------------------------------------------------------------

def _actor(session: Session) -> Actor:
    actor = session.info.get("actor")
    if actor is None:
        raise audit.MissingActor("identity write without an actor")
    return actor


def _facility_id() -> str:
    if has_app_context():
        return current_app.config["GMP_SETTINGS"].facility_id
    raise RuntimeError("COI IDs are assigned inside an application context (facility id)")


def _site(session: Session, code: str, field_name: str) -> Site:
    if not isinstance(code, str) or not code.isprintable():
        raise field_error(field_name, "must not contain control characters")
    site = session.scalar(select(Site).where(Site.code == (code or "").strip().upper()))
    if site is None:
        raise field_error(field_name, f"no site with code {code!r}")
    return site


def _durations(values: Iterable[Any], field_name: str) -> list[str]:
    out = []
    for value in values:
        text = value if isinstance(value, str) else None
        try:
            if text is None:
                raise ValueError
            parse_duration(text)
        except ValueError:
            raise field_error(field_name, f"{value!r} is not an ISO 8601 duration") from None
        out.append(text.strip().upper())
    return out


def _new_item_id(session: Session) -> str:
    while True:
        candidate = "ITM-" + "".join(secrets.choice(ITEM_ID_ALPHABET) for _ in range(8))
        if session.get(Item, candidate) is None:
            return candidate


def _custody(
    session: Session,
    item: ItemFacts,
    action: str,
    *,
    site_code: str | None,
    location: str | None = None,
    destination: str | None = None,
    workstation: str | None = None,
    ok: bool | None = None,
    flagged: bool = False,
    detail: Any = None,
) -> CustodyEvent:
    """Append one custody event and its audit event.

    Written with one Core INSERT rather than through the unit of work: it runs on every
    scan, and the row is append-only, so there is no later change to track. The audit
    event carries the same columns the mapper hooks would record."""
    actor = _actor(session)
    values = {
        "item_id": item.item_id,
        "action": action,
        "site_code": site_code,
        "location": printable(location, 100) if location else None,
        "destination_site": destination,
        "user_id": actor.user_id,
        "username": actor.username,
        "workstation": printable(workstation, 100) if workstation else None,
        "occurred_at": utcnow(),
        "ok": ok,
        "flagged": flagged,
        "detail": json.dumps(detail, sort_keys=True) if detail is not None else None,
    }
    session.flush()  # a new item must be in the database before its first event
    event_id = session.connection().execute(_INSERT_CUSTODY, values).scalar_one()
    audit.record(session, "create", CustodyEvent.audit_entity, str(event_id),
                 new={"id": event_id, **values})
    return CustodyEvent(id=event_id, **values)  # transient: the row as written


_INSERT_CUSTODY = CustodyEvent.__table__.insert().returning(CustodyEvent.__table__.c.id)


def printable(text: str, limit: int = 300) -> str:
    """Scanned text as stored: control characters escaped (PostgreSQL refuses NUL in
    text), cut to ``limit`` characters. What was scanned stays visible in the record."""
    cut = text[:limit]
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in cut)


class ItemFacts(Protocol):
    """What checks read of an item: an ``Item`` or a row of the item table (scans read
    the row with one Core query and change nothing on it)."""

    @property
    def item_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def coi_id(self) -> str: ...
    @property
    def batch_number(self) -> str | None: ...
    @property
    def location(self) -> str | None: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def post_thaw_window(self) -> str | None: ...
    @property
    def thawed_at(self) -> datetime | None: ...


_ITEM_ROW = select(Item.__table__).where(Item.__table__.c.item_id == bindparam("item_id"))


def _item_row(session: Session, item_id: str) -> ItemFacts | None:
    """The item's row as it is now, without loading it into the session."""
    row = session.connection().execute(_ITEM_ROW, {"item_id": item_id}).first()
    return cast("ItemFacts | None", row)  # a Row answers every column by name


def hold_time_over(item: ItemFacts) -> bool:
    """SPEC §3: a starting material's hold time runs from collection to batch start. Once
    its batch has started it (``in_process``), the hold time no longer applies."""
    return item.kind == ItemKind.STARTING_MATERIAL and item.status == S.IN_PROCESS


def is_expired(item: ItemFacts, now: datetime | None = None) -> bool:
    now = now or utcnow()
    if item.status == S.EXPIRED:
        return True
    if hold_time_over(item):
        return False
    return item.expires_at is not None and item.expires_at <= now


def post_thaw_deadline(item: ItemFacts) -> datetime | None:
    if item.thawed_at is None or not item.post_thaw_window:
        return None
    return item.thawed_at + parse_duration(item.post_thaw_window)


def effective_deadline(item: Item) -> datetime | None:
    """The first of the shelf-life expiry and, for a thawed bag, the post-thaw deadline."""
    deadlines = [d for d in (item.expires_at, post_thaw_deadline(item)) if d is not None]
    return min(deadlines, default=None)


# Statuses of containers that still need someone to act on them at a site.
TO_HANDLE = ("quarantine", "available", "released", "conditionally_released", "shipped",
             "received", "thawed", "blocked")


def items_to_handle(
    session: Session, site_code: str, limit: int = 10
) -> list[tuple[Item, datetime | None]]:
    """Containers at a site that still need handling, the most urgent deadline first."""
    items = session.scalars(
        select(Item).where(Item.site_code == site_code, Item.status.in_(TO_HANDLE),
                           Item.kind != ItemKind.WRISTBAND.value)
    ).all()
    ranked = sorted(
        ((item, effective_deadline(item)) for item in items),
        key=lambda pair: (pair[1] is None, pair[1] or datetime.max.replace(tzinfo=UTC)),
    )
    return ranked[:limit]


# --- items ------------------------------------------------------------------------------

def create_item(
    session: Session,
    *,
    kind: str,
    coi_id: str,
    site_code: str,
    status: str,
    parent_ids: Sequence[str] = (),
    batch_number: str | None = None,
    description: str | None = None,
    expires_at: datetime | None = None,
    expiry_warnings: Sequence[str] = (),
    post_thaw_window: str | None = None,
    location: str | None = None,
) -> Item:
    """A new container. Autologous rule: every parent has the same COI (409 coi_mismatch;
    also refused by a database trigger)."""
    if kind not in {k.value for k in ItemKind}:
        raise field_error("kind", f"must be one of {', '.join(k.value for k in ItemKind)}")
    if status not in KIND_STATUSES[kind]:
        raise field_error("status", f"a {kind} cannot be created in status {status!r}")
    if expires_at is not None and expires_at.tzinfo is None:
        raise field_error("expires_at", "must carry a time zone")
    warnings = _durations(expiry_warnings, "expiry_warnings")
    window = _durations([post_thaw_window], "post_thaw_window")[0] if post_thaw_window else None
    get_patient(session, coi_id)
    site = _site(session, site_code, "site_code")
    parents = [get_item(session, pid) for pid in dict.fromkeys(parent_ids)]
    foreign = [p.item_id for p in parents if p.coi_id != coi_id]
    if foreign:
        # The one unforgivable error: material of another patient (SPEC §1).
        raise CoiMismatch(
            f"autologous rule: {', '.join(foreign)} belong(s) to another COI than {coi_id}; "
            "material of two patients can never be combined"
        )
    actor = _actor(session)
    item = Item(
        item_id=_new_item_id(session),
        kind=kind,
        status=status,
        coi_id=coi_id,
        batch_number=batch_number,
        description=description,
        site_code=site.code,
        location=location,
        custodian=actor.user_id,
        expires_at=expires_at.astimezone(UTC) if expires_at else None,
        expiry_warnings=",".join(warnings) or None,
        post_thaw_window=window,
        created_at=utcnow(),
    )
    session.add(item)
    session.flush()
    for parent in parents:
        session.add(ItemParent(item_id=item.item_id, parent_id=parent.item_id))
    _custody(session, item, CustodyAction.CREATE, site_code=site.code, location=location,
             detail={"status": status, "parents": [p.item_id for p in parents]} if parents
             else {"status": status})
    session.flush()
    return item


def get_item(session: Session, item_id: str, *, for_update: bool = False) -> Item:
    key = (item_id or "").strip().upper()
    if not key.isprintable():
        raise NotFound(f"no item {printable(key, 40)!r}")
    if for_update:
        item = session.scalar(lock_rows(select(Item).where(Item.item_id == key), Item))
    else:
        item = session.get(Item, key)
    if item is None:
        raise NotFound(f"no item {item_id!r}")
    return item


def items_of_batch(session: Session, batch_number: str) -> list[Item]:
    return list(session.scalars(
        select(Item).where(Item.batch_number == batch_number).order_by(Item.created_at,
                                                                       Item.item_id)
    ))


def items_of_coi(session: Session, coi_id: str) -> list[Item]:
    return list(session.scalars(
        select(Item).where(Item.coi_id == coi_id).order_by(Item.created_at, Item.item_id)
    ))


def can_transition(item: Item, to_status: str) -> bool:
    return (
        item.status not in FINAL_STATUSES
        and to_status in TRANSITIONS.get(item.status, frozenset())
        and to_status in KIND_STATUSES[item.kind]
    )


def transition_item(
    session: Session, item_id: str, to_status: str, *, reason: str | None = None
) -> Item:
    """The item state machine (SPEC §2); illegal or from a final status -> 409."""
    item = get_item(session, item_id, for_update=True)
    if to_status not in {s.value for s in ItemStatus}:
        raise field_error("status", f"unknown item status {to_status!r}")
    if item.status in FINAL_STATUSES:
        raise InvalidTransition(
            f"item {item.item_id} is {item.status}, a final status: no further change"
        )
    if not can_transition(item, to_status):
        raise InvalidTransition(
            f"item {item.item_id} ({item.kind}) cannot go from {item.status} to {to_status}"
        )
    with audit.reason(session, reason):
        item.status = to_status
    if to_status in CAUSE_GONE_STATUSES:
        # Its expiry and hold-time alerts are about a container still to be used: once
        # it is consumed, administered or destroyed their cause is gone (issue 15).
        from gmp_mes.alerts import AlertKind, resolve_for_subject

        resolve_for_subject(
            session, "item", item.item_id,
            (AlertKind.EXPIRY_WARNING, AlertKind.EXPIRED, AlertKind.HOLD_TIME_EXCEEDED,
             AlertKind.POST_THAW_EXCEEDED),
            f"resolved: item {item.item_id} is {to_status}" + (f" ({reason})" if reason else ""))
    return item


CAUSE_GONE_STATUSES = frozenset({"consumed", "administered", "destroyed"})


def start_processing(session: Session, item_id: str, batch_number: str) -> Item:
    """Batch start (batches.start_batch): the starting material becomes ``in_process``
    for that batch (SPEC §2) and names it, so its label scans OK against that batch only."""
    item = transition_item(session, item_id, S.IN_PROCESS,
                           reason=f"batch {batch_number} started")
    with audit.reason(session, f"batch {batch_number} started"):
        item.batch_number = batch_number
    session.flush()
    return item


def consume_starting_material(
    session: Session, item_id: str, batch_number: str, step_code: str
) -> Item | None:
    """The step that consumes the starting material was recorded: ``consumed`` (final, it
    can never feed anything again). Material of a batch started before this rule existed
    is consumed already and stays as it is."""
    item = get_item(session, item_id, for_update=True)
    if item.status != S.IN_PROCESS:
        return None
    return transition_item(session, item_id, S.CONSUMED,
                           reason=f"consumed by step {step_code} of batch {batch_number}")


def reject_starting_material(
    session: Session, item_id: str, batch_number: str, reason: str
) -> Item | None:
    """QA rejected the batch before its consuming step: the starting material still in
    process for it is rejected with it (it can feed no other batch, and leaves no
    ``in_process`` container behind). Material consumed or elsewhere stays as it is."""
    item = get_item(session, item_id, for_update=True)
    if item.status != S.IN_PROCESS or item.batch_number != batch_number:
        return None
    return transition_item(session, item_id, S.REJECTED, reason=f"batch rejected: {reason}")


def genealogy(session: Session, item_id: str) -> dict[str, list[str]]:
    """Ancestors and descendants of an item (ids, nearest first)."""
    def walk(start: str, up: bool) -> list[str]:
        seen: list[str] = []
        frontier = [start]
        while frontier and len(seen) < MAX_GENEALOGY:
            column, other = (
                (ItemParent.item_id, ItemParent.parent_id) if up
                else (ItemParent.parent_id, ItemParent.item_id)
            )
            found = list(session.scalars(select(other).where(column.in_(frontier))))
            frontier = [i for i in dict.fromkeys(found) if i not in seen and i != start]
            seen.extend(frontier)
        return seen

    return {"ancestors": walk(item_id, True), "descendants": walk(item_id, False)}


def parents_of(session: Session, item_id: str) -> list[str]:
    return list(session.scalars(
        select(ItemParent.parent_id).where(ItemParent.item_id == item_id)
        .order_by(ItemParent.parent_id)
    ))


def children_of(session: Session, item_id: str) -> list[str]:
    return list(session.scalars(
        select(ItemParent.item_id).where(ItemParent.parent_id == item_id)
        .order_by(ItemParent.item_id)
    ))


def custody_trail(session: Session, item_id: str) -> list[CustodyEvent]:
    return list(session.scalars(
        select(CustodyEvent).where(CustodyEvent.item_id == item_id).order_by(CustodyEvent.id)
    ))


def labels_of(session: Session, item_id: str) -> list[Any]:
    return list(labels.labels_of_item(session, item_id))


# --- patients ---------------------------------------------------------------------------

def get_patient(session: Session, coi_id: str) -> Patient:
    key = (coi_id or "").strip().upper()
    if not key.isprintable():
        raise NotFound(f"no patient with COI ID {printable(key, 20)!r}")
    patient = session.scalar(select(Patient).where(Patient.coi_id == key))
    if patient is None:
        raise NotFound(f"no patient with COI ID {coi_id!r}")
    return patient


def _next_coi(session: Session, facility_id: str, year: int) -> str:
    """Allocate the next COI sequence of the year in one atomic upsert: concurrent
    enrolments serialise on the counter row (on both databases), never sharing a number."""
    prefix = f"{facility_id}{year % 100:02d}"
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    table = CoiCounter.__table__
    statement = (
        insert(table).values(prefix=prefix, last_value=1)
        .on_conflict_do_update(index_elements=["prefix"],
                               set_={"last_value": table.c.last_value + 1})
        .returning(table.c.last_value)
    )
    value = session.execute(statement).scalar_one()
    if value > coi.SEQUENCE_MAX:
        raise conflict("coi_exhausted", f"all COI IDs of {prefix} are used")
    return coi.make_coi(facility_id, year, value)


# Advisory locks of enrolments (two-key form: apart from the chain's one-key lock).
ENROL_LOCK_CLASS = 7_470_003


def _lock_mrn(session: Session, site_code: str, mrn: str) -> None:
    """Serialise enrolments of one MRN at one site until commit (PostgreSQL; on SQLite the
    writer lock already does): the loser then sees the winner's patient and gets
    ``already_enrolled`` with its COI, never a bare unique-constraint conflict."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sql_text("SELECT pg_advisory_xact_lock(:cls, hashtext(:key))"),
                        {"cls": ENROL_LOCK_CLASS, "key": f"{site_code}\x1f{mrn}"})


def enrol_patient(
    session: Session,
    *,
    given_name: str,
    family_name: str,
    date_of_birth: date,
    mrn: str,
    treatment_site: str,
    facility_id: str | None = None,
) -> Patient:
    """Enrol a patient: assign the COI ID and create the wristband item."""
    given_name, family_name = (given_name or "").strip(), (family_name or "").strip()
    mrn = (mrn or "").strip().upper()
    errors: dict[str, list[str]] = {}
    if not given_name:
        errors["given_name"] = ["must not be empty"]
    if not family_name:
        errors["family_name"] = ["must not be empty"]
    if not mrn:
        errors["mrn"] = ["must not be empty"]
    for name, value in (("given_name", given_name), ("family_name", family_name),
                        ("mrn", mrn), ("treatment_site", treatment_site or "")):
        if not value.isprintable():
            errors[name] = ["must not contain control characters"]
    now = utcnow()
    if date_of_birth > now.date():
        errors["date_of_birth"] = ["must not be in the future"]
    elif date_of_birth.year < 1900:
        errors["date_of_birth"] = ["must be after 1900"]
    site = None
    if "treatment_site" not in errors:
        site = session.scalar(
            select(Site).where(Site.code == (treatment_site or "").strip().upper()))
        if site is None:
            errors["treatment_site"] = [f"no site with code {treatment_site!r}"]
        elif site.kind != SiteKind.TREATMENT:
            errors["treatment_site"] = [f"site {site.code} is not a treatment site"]
    if errors:
        raise ValidationFailed("invalid enrolment", errors=errors)
    assert site is not None
    _lock_mrn(session, site.code, mrn)
    existing = session.scalar(
        select(Patient).where(Patient.treatment_site == site.code, Patient.mrn == mrn)
    )
    if existing is not None:
        raise conflict(
            "already_enrolled",
            f"MRN {mrn} is already enrolled at {site.code} with COI ID {existing.coi_id}",
            extra={"coi_id": existing.coi_id},
        )
    coi_id = _next_coi(session, facility_id or _facility_id(), now.year)
    actor = _actor(session)
    patient = Patient(
        coi_id=coi_id, given_name=given_name, family_name=family_name,
        date_of_birth=date_of_birth, mrn=mrn, treatment_site=site.code,
        enrolled_at=now, enrolled_by=actor.user_id,
    )
    session.add(patient)
    session.flush()
    wristband = create_item(session, kind=ItemKind.WRISTBAND, coi_id=coi_id,
                            site_code=site.code, status=S.AVAILABLE,
                            description=f"Wristband of {family_name.upper()}, {given_name}")
    patient.wristband_item_id = wristband.item_id
    session.flush()
    return patient


def record_collection(
    session: Session,
    *,
    coi_id: str,
    collected_at: datetime,
    site: str,
    volume_ml: float,
    din: str | None = None,
    process_code: str | None = None,
) -> Collection:
    """An apheresis collection and its starting-material item, expiring the process's
    hold time after collection (SPEC §3)."""
    errors: dict[str, list[str]] = {}
    coi_id = (coi_id or "").strip().upper()
    if problem := coi.coi_problem(coi_id):
        errors["coi_id"] = [problem]
    now = utcnow()
    if collected_at.tzinfo is None:
        errors["collected_at"] = ["must carry a time zone (UTC offset)"]
    elif collected_at > now + COLLECTION_CLOCK_SKEW:
        errors["collected_at"] = ["must not be in the future"]
    elif collected_at < now - MAX_COLLECTION_AGE:
        errors["collected_at"] = ["is more than 10 years ago: check the date"]
    if not volume_ml or volume_ml <= 0 or volume_ml > 5000:
        errors["volume_ml"] = ["must be more than 0 and at most 5000 mL"]
    if din is not None:
        din = din.strip().upper()
        if problem := coi.din_problem(din):
            errors["din"] = [problem]
    collection_site = None
    if not (site or "").isprintable():
        errors["site"] = ["must not contain control characters"]
    else:
        collection_site = session.scalar(
            select(Site).where(Site.code == (site or "").strip().upper()))
    if collection_site is None and "site" not in errors:
        errors["site"] = [f"no site with code {site!r}"]
    if errors:
        raise ValidationFailed("invalid collection", errors=errors)
    assert collection_site is not None
    patient = session.scalar(select(Patient).where(Patient.coi_id == coi_id))
    if patient is None:
        raise field_error("coi_id", f"no patient with COI ID {coi_id}")
    if collected_at.astimezone(UTC).date() < patient.date_of_birth:
        # Autologous: the cells are the patient's own, so never collected before birth.
        raise field_error("collected_at", f"is before the patient's date of birth "
                                          f"({patient.date_of_birth.isoformat()})")
    if din and session.scalar(select(Collection.id).where(Collection.din == din)):
        raise AlreadyExists(f"DIN {din} is already recorded")
    hold, warn_before = processes.starting_material_hold_time(session, process_code)
    collected_at = collected_at.astimezone(UTC)
    item = create_item(
        session, kind=ItemKind.STARTING_MATERIAL, coi_id=coi_id,
        site_code=collection_site.code, status=S.AVAILABLE,
        description=f"Apheresis product, {volume_ml:g} mL" + (f", DIN {din}" if din else ""),
        expires_at=collected_at + hold, expiry_warnings=warn_before,
    )
    collection = Collection(
        coi_id=coi_id, collected_at=collected_at, entered_at=now,
        site_code=collection_site.code, volume_ml=float(volume_ml), din=din,
        item_id=item.item_id, recorded_by=_actor(session).user_id,
    )
    session.add(collection)
    session.flush()
    return collection


def collections_of(session: Session, coi_id: str) -> list[Collection]:
    return list(session.scalars(
        select(Collection).where(Collection.coi_id == coi_id).order_by(Collection.collected_at)
    ))


def collection_of_item(session: Session, item_id: str) -> Collection | None:
    return session.scalar(select(Collection).where(Collection.item_id == item_id))


def label_data(session: Session, item_id: str) -> dict[str, Any]:
    """What a label of the item shows and signs (labels.services uses it)."""
    item = get_item(session, item_id)
    patient = get_patient(session, item.coi_id)
    site = session.scalar(select(Site).where(Site.code == item.site_code))
    return {
        "item_id": item.item_id,
        "kind": item.kind,
        "kind_code": KIND_CODES[ItemKind(item.kind)],
        "status": item.status,
        "coi_id": item.coi_id,
        "expires_at": item.expires_at,
        "patient_name": f"{patient.family_name.upper()}, {patient.given_name}",
        "date_of_birth": patient.date_of_birth,
        "batch_number": item.batch_number,
        "description": item.description,
        "site_code": item.site_code,
        "site_timezone": site.timezone if site is not None else "UTC",
        "storage": STORAGE[ItemKind(item.kind)],
        # A bag of a conditionally released batch keeps saying so after it has left the
        # manufacturer, until QA's final release (SPEC §5).
        "conditional": item.status == S.CONDITIONALLY_RELEASED or (
            item.kind == ItemKind.FINAL_PRODUCT and bool(_bedside_warnings(session, item))),
    }


# --- custody ----------------------------------------------------------------------------

CUSTODY_ACTIONS = ("handover", "move", "ship", "receive", "thaw")
# The roles that handle containers; an account holding only ``admin`` never records custody.
CUSTODY_ROLES = ("operator", "qc", "qa", "clinician")


def _site_refused(detail: str) -> Forbidden:
    """403 ``site_mismatch``: the caller is not a user of the site where the action happens."""
    error = Forbidden(detail)
    error.code = "site_mismatch"  # type: ignore[misc]
    return error


def _wrong_destination_follow_up(item: Item, at: str, expected: str, user: Person) -> Any:
    """A bag arriving where it was not sent is a chain-of-custody event QA must know of,
    even though the receipt itself is refused: the alert is raised in its own transaction."""
    item_id, coi_id = item.item_id, item.coi_id

    def follow_up(session: Session) -> None:
        session.info["actor"] = Actor(user.username, user.id, user.full_name)
        raise_alert(session, AlertSpec(
            cause=f"wrong_destination:{item_id}:{expected}:{at}",
            kind="wrong_destination", severity="major", subject_type="item",
            subject_id=item_id,
            message=f"item {item_id} (COI {coi_id}) shipped to {expected} was presented for "
                    f"receipt at {at} by {user.username}; the receipt was refused",
            roles=("qa", "operator", "clinician"), site_code=expected,
        ))
        session.flush()

    return follow_up


def _custody_recipient(session: Session, username: str | None, item: Item,
                       user: Person) -> User:
    """Handover names the person who takes custody: a user of the item's site."""
    if username is None or not username.strip():
        recipient = session.get(User, user.id)
        assert recipient is not None
        return recipient
    name = username.strip().lower()
    recipient = session.scalar(select(User).where(User.username == name))
    if recipient is None or not recipient.active:
        raise field_error("to_user", f"no active user {username.strip()!r}")
    if not recipient.has_role(*CUSTODY_ROLES):
        raise field_error("to_user", f"{recipient.username} holds no role that takes custody")
    if recipient.site.code != item.site_code:
        raise conflict("handover_other_site",
                       f"{recipient.username} is a user of {recipient.site.code}; item "
                       f"{item.item_id} is at {item.site_code}: a handover stays within the "
                       "site (ship and receive to take it elsewhere)")
    return recipient


def record_custody(
    session: Session,
    item_id: str,
    *,
    action: str,
    site: str,
    user: Person,
    location: str | None = None,
    workstation: str | None = None,
    to_user: str | None = None,
) -> CustodyEvent:
    """One custody action, recorded at the caller's own site only (SPEC §7):

    - ``handover`` at the item's site: custody passes to ``to_user`` (a user of that
      site), or to the caller when none is named;
    - ``move`` changes the location inside the item's site, never the site;
    - ``ship`` leaves the item's site for ``site``, the destination;
    - ``receive`` happens at the shipment's destination, by a user of that site;
    - ``thaw`` where the item is (starts the post-thaw window).

    Refusals: 403 ``site_mismatch`` (the caller is of another site), 409
    ``move_changes_site``, ``not_at_site``, ``wrong_destination`` (QA alerted),
    ``in_transit``, ``handover_other_site``. This is the one place these rules live."""
    if action not in CUSTODY_ACTIONS:
        raise field_error("action", f"must be one of {', '.join(CUSTODY_ACTIONS)}")
    if not user.has_role(*CUSTODY_ROLES):
        raise Forbidden("custody is recorded by the people who handle the item; an admin "
                        "account cannot record it")
    target = _site(session, site, "site")
    mine = user.site.code
    location = location.strip() if location and location.strip() else None
    item = get_item(session, item_id, for_update=True)
    if item.status in FINAL_STATUSES:
        raise InvalidTransition(f"item {item.item_id} is {item.status}: no custody change")
    now = utcnow()
    if action in ("ship", "thaw") and is_expired(item, now):
        # Receipt and handovers of an expired item are still recorded; sending it on or
        # thawing it for infusion is not allowed.
        verb = {"ship": "shipped", "thaw": "thawed"}[action]
        raise Expired(f"item {item.item_id} has expired; it cannot be {verb}")
    if action == "ship":
        if mine != item.site_code:
            raise _site_refused(f"item {item.item_id} is at {item.site_code}: a shipment is "
                                f"recorded by a user of {item.site_code}, the site it leaves "
                                f"(you are a user of {mine})")
    elif action == "receive":
        expected = item.ship_to
        if item.status == S.SHIPPED and expected is not None and target.code != expected:
            raise conflict(
                "wrong_destination",
                f"item {item.item_id} was shipped to {expected}, not to {target.code}: it is "
                f"received only at its destination; QA is alerted",
                extra={"expected_site": expected},
                follow_up=_wrong_destination_follow_up(item, target.code, expected, user),
            )
        if mine != target.code:
            raise _site_refused(f"a receipt at {target.code} is recorded by a user of "
                                f"{target.code} (you are a user of {mine})")
    else:  # handover, move, thaw: where the item is
        if item.status == S.SHIPPED:
            raise conflict("in_transit",
                           f"item {item.item_id} is in transit to {item.ship_to or '?'}: it "
                           "must be received at its destination first")
        if target.code != item.site_code:
            if action == "move":
                raise conflict(
                    "move_changes_site",
                    f"item {item.item_id} is at {item.site_code}: a move changes the location "
                    f"inside that site, never the site; to take it to {target.code}, ship it "
                    "and receive it there")
            raise conflict("not_at_site",
                           f"item {item.item_id} is at {item.site_code}, not at {target.code}: "
                           f"a {action} is recorded where the item is")
        if mine != item.site_code:
            raise _site_refused(f"item {item.item_id} is at {item.site_code}: a {action} there "
                                f"is recorded by a user of {item.site_code} (you are a user "
                                f"of {mine})")
    if action == "handover":
        recipient = _custody_recipient(session, to_user, item, user)
        event = _custody(session, item, action, site_code=item.site_code, location=location,
                         workstation=workstation,
                         detail={"from_custodian": item.custodian, "to_user": recipient.username})
        item.custodian = recipient.id
        item.location = location or item.location
    elif action == "move":
        event = _custody(session, item, action, site_code=item.site_code, location=location,
                         workstation=workstation, detail={"from_location": item.location})
        item.location = location
    elif action == "ship":
        if target.code == item.site_code:
            raise field_error("site", "the destination is the site the item is already at")
        transition_item(session, item.item_id, S.SHIPPED, reason=f"shipped to {target.code}")
        event = _custody(session, item, action, site_code=item.site_code,
                         location=item.location, destination=target.code,
                         workstation=workstation)
        item.ship_to = target.code
        item.custodian = user.id
    elif action == "receive":
        transition_item(session, item.item_id, S.RECEIVED, reason=f"received at {target.code}")
        event = _custody(session, item, action, site_code=target.code, location=location,
                         workstation=workstation)
        item.site_code, item.location, item.ship_to = target.code, location, None
        item.custodian = user.id
    else:  # thaw
        transition_item(session, item.item_id, S.THAWED, reason=f"thawed at {target.code}")
        item.thawed_at = now
        deadline = post_thaw_deadline(item)
        event = _custody(session, item, action, site_code=item.site_code, location=location,
                         workstation=workstation,
                         detail={"administer_before": audit.format_time(deadline)}
                         if deadline else None)
        item.location = location or item.location
    session.flush()
    return event


# --- scans ------------------------------------------------------------------------------

@dataclass
class ScanResult:
    ok: bool
    item: ItemFacts | None
    coi_id: str | None
    status: str | None
    expires_at: datetime | None
    reasons: list[dict[str, str]] = field(default_factory=list)
    batch_number: str | None = None
    event_id: int | None = None  # the custody event recording the scan


def _r(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def _item_problems(item: ItemFacts, now: datetime) -> list[dict[str, str]]:
    """Status and expiry reasons shared by scans and the bedside."""
    reasons = []
    if item.status == S.BLOCKED:
        reasons.append(_r("blocked", f"item {item.item_id} is under a quality block"))
    if is_expired(item, now):
        when = item.expires_at.strftime("%Y-%m-%d %H:%M UTC") if item.expires_at else "-"
        reasons.append(_r("expired", f"item {item.item_id} expired ({when})"))
    deadline = post_thaw_deadline(item)
    if item.status == S.THAWED and deadline is not None and deadline <= now:
        reasons.append(_r("post_thaw_window_exceeded",
                          f"thawed {item.thawed_at:%H:%M} UTC; the post-thaw limit "
                          f"{item.post_thaw_window} passed at {deadline:%H:%M} UTC"))
    return reasons


def _forged_alert(session: Session, payload_text: str, code: str, message: str,
                  site_code: str | None, workstation: str | None, subject: str) -> None:
    severity = "critical" if code == "bad_signature" else "major"
    what = "forged or altered label" if code == "bad_signature" else "voided label"
    raise_alert(session, AlertSpec(
        cause=f"label_{code}:{labels.payload_digest(payload_text)}",
        kind="label_forged" if code == "bad_signature" else "label_voided",
        severity=severity, subject_type="item", subject_id=subject[:80],
        message=f"{what} scanned at {printable(workstation or 'unknown workstation', 100)} "
                f"({site_code or '-'}): {message}",
        roles=("qa",), site_code=site_code,
    ))


def scan(
    session: Session,
    raw: str,
    *,
    user: Person,
    site_code: str | None,
    workstation: str | None = None,
    batch_number: str | None = None,
) -> ScanResult:
    """Check one scanned label and record the scan, refused or not (SPEC §7 /scans)."""
    now = utcnow()
    check = labels.check_payload(session, raw)
    reasons = [_r(code, message) for code, message in check.reasons]
    payload = check.payload
    item = None
    if payload is not None:
        item = _item_row(session, payload.subject_id)
        if item is None:
            reasons.append(_r("unknown_item", f"no item {payload.subject_id} is on record"))
    trusted = payload is not None and not any(
        r["code"] in ("malformed", "bad_signature") for r in reasons
    )
    if item is not None and trusted:
        assert payload is not None
        if payload.coi_id != item.coi_id:
            reasons.append(_r("coi_mismatch", f"the label says COI {payload.coi_id}, the item "
                                              f"belongs to {item.coi_id}"))
        if payload.kind_code != KIND_CODES[ItemKind(item.kind)]:
            reasons.append(_r("label_mismatch", f"the label is for a {payload.kind_code}, the "
                                                f"item is a {item.kind}"))
        reasons.extend(_item_problems(item, now))
        if item.status in FINAL_STATUSES - {S.EXPIRED}:
            reasons.append(_r("status_final", f"item {item.item_id} is {item.status}; it must "
                                              "not be used"))
        if batch_number:
            reasons.extend(_batch_check(session, item, batch_number))
    for r in reasons:
        if r["code"] in ("bad_signature", "voided"):
            text = payload.text if payload is not None else labels.normalise_scan(raw)
            _forged_alert(session, text, r["code"], r["message"], site_code, workstation,
                          payload.subject_id if payload is not None else "unknown")
    ok = not reasons
    detail = {"reasons": reasons}
    if batch_number:
        detail["batch_number"] = batch_number
    event_id = None
    if item is not None:
        event_id = _custody(session, item, CustodyAction.SCAN, site_code=site_code,
                            location=item.location, workstation=workstation, ok=ok,
                            flagged=not ok, detail=detail).id
    else:
        # No item to hang a custody event on: the refused scan is an audit event.
        text = labels.normalise_scan(raw) if isinstance(raw, str) else ""
        audit.record(session, "scan.refused", "scan", printable(workstation or "-", 80),
                     new={"payload": printable(text), "site": site_code, "reasons": reasons})
    session.flush()
    shown = item if trusted else None
    return ScanResult(
        ok=ok, item=shown,
        coi_id=shown.coi_id if shown else None,
        status=shown.status if shown else None,
        expires_at=shown.expires_at if shown else None,
        reasons=reasons, batch_number=batch_number, event_id=event_id,
    )


def batch_starting_material(session: Session, batch_number: str) -> tuple[str, str] | None:
    """``(item_id, coi_id)`` of the starting material a batch started from, from identity's
    own records: batch start marks it with the batch number (:func:`start_processing`) and
    nothing ever clears it. ``None``: no batch of that number was started."""
    row = session.execute(
        select(Item.item_id, Item.coi_id)
        .where(Item.batch_number == batch_number, Item.kind == ItemKind.STARTING_MATERIAL)
        .limit(1)
    ).first()
    return None if row is None else (row.item_id, row.coi_id)


def _batch_check(session: Session, item: ItemFacts, batch_number: str) -> list[dict[str, str]]:
    started = batch_starting_material(session, batch_number)
    if started is None:
        return [_r("unknown_batch", f"no batch {batch_number}")]
    starting, batch_coi = started
    if batch_coi != item.coi_id:
        return [_r("coi_mismatch", f"item {item.item_id} belongs to COI {item.coi_id}, batch "
                                   f"{batch_number} to COI {batch_coi}: wrong patient")]
    # Same patient, but is it this batch's material? Starting material belongs to the
    # batch it started (in_process until the step that consumes it); an item made by or
    # feeding another batch is not this batch's.
    if item.kind == ItemKind.STARTING_MATERIAL and item.item_id != starting:
        feeds = f"batch {item.batch_number}" if item.batch_number else "no batch yet"
        return [_r("wrong_batch", f"starting material {item.item_id} is not the starting "
                                  f"material of batch {batch_number} ({starting}); it "
                                  f"belongs to {feeds}")]
    if (item.kind != ItemKind.STARTING_MATERIAL and item.batch_number
            and item.batch_number != batch_number):
        return [_r("wrong_batch", f"item {item.item_id} belongs to batch {item.batch_number}, "
                                  f"not to batch {batch_number}")]
    return []


def resolve_item_ref(session: Session, ref: str, *, field_name: str = "item_id") -> str:
    """An item id, or a scanned label payload (SPEC §11: a payload is accepted wherever an
    id is): the payload's signature is verified online (not voided) and its COI and kind
    must be the item's. Returns the item id; 409 with the label's reason code otherwise."""
    text = labels.normalise_scan(ref) if isinstance(ref, str) else ""
    if not text.startswith("GMP1:"):
        return text.strip().upper()
    check = labels.check_payload(session, text)
    if check.reasons or check.payload is None:
        code, message = check.reasons[0] if check.reasons else ("malformed", "not a label")
        raise conflict(code, f"{field_name}: the scanned label is refused: {message}",
                       extra={"reasons": [_r(c, m) for c, m in check.reasons]})
    payload = check.payload
    item = get_item(session, payload.subject_id)
    if payload.coi_id != item.coi_id:
        raise CoiMismatch(f"the label says COI {payload.coi_id}, item {item.item_id} belongs "
                          f"to {item.coi_id}")
    if payload.kind_code != KIND_CODES[ItemKind(item.kind)]:
        raise conflict("label_mismatch", f"the label is for a {payload.kind_code}, item "
                                         f"{item.item_id} is a {item.kind}")
    return item.item_id


# --- bedside ----------------------------------------------------------------------------

def _bedside_warnings(session: Session, item: Item) -> list[dict[str, str]]:
    if not item.batch_number:
        return []
    # What the release still waits for comes from above (qc, through the registry seam).
    return [w for source in registry.release_warnings.providers()
            for w in source(session, item.batch_number)]


@dataclass
class BedsideResult:
    match: bool
    reasons: list[dict[str, str]]
    item: Item | None
    patient: Patient | None
    verification: BedsideVerification | None = None
    administer_before: datetime | None = None  # post-thaw deadline of a thawed bag
    # Forged or voided labels scanned: (payload text, code, message, subject) to alert QA.
    label_alerts: list[tuple[str, str, str, str]] = field(default_factory=list)
    # On a MATCH: what the clinician must know before infusing (conditional release).
    warnings: list[dict[str, str]] = field(default_factory=list)


def _last_location_event(session: Session, item_id: str) -> CustodyEvent | None:
    return session.scalar(
        select(CustodyEvent)
        .where(CustodyEvent.item_id == item_id,
               CustodyEvent.action.notin_([CustodyAction.SCAN.value]))
        .order_by(CustodyEvent.id.desc()).limit(1)
    )


def _evaluate_bedside(
    session: Session, patient_raw: str, product_raw: str, site_code: str | None
) -> BedsideResult:
    now = utcnow()
    reasons: list[dict[str, str]] = []
    wristband = labels.check_payload(session, patient_raw)
    product = labels.check_payload(session, product_raw)
    patient = None
    item = None
    for code, message in wristband.reasons:
        reasons.append(_r("patient_label_invalid", f"wristband: {message} ({code})"))
    if wristband.payload is not None and not wristband.reasons:
        wb = session.get(Item, wristband.payload.subject_id)
        if wristband.payload.kind_code != "WB" or wb is None or wb.kind != ItemKind.WRISTBAND:
            reasons.append(_r("patient_label_invalid", "the first scan is not a patient wristband"))
        elif wb.status != S.AVAILABLE or wb.coi_id != wristband.payload.coi_id:
            reasons.append(_r("patient_label_invalid",
                              f"wristband {wb.item_id} is {wb.status}; it is no longer valid"))
        else:
            patient = session.scalar(select(Patient).where(Patient.coi_id == wb.coi_id))
    for code, message in product.reasons:
        reasons.append(_r("product_label_invalid", f"bag: {message} ({code})"))
    if product.payload is not None and not product.reasons:
        item = session.get(Item, product.payload.subject_id)
        if item is None:
            reasons.append(_r("product_label_invalid",
                              f"no item {product.payload.subject_id} is on record"))
        elif item.coi_id != product.payload.coi_id:
            reasons.append(_r("product_label_invalid", "the bag label's COI is not the item's"))
    patient_coi = wristband.payload.coi_id if wristband.payload is not None else None
    product_coi = item.coi_id if item is not None else (
        product.payload.coi_id if product.payload is not None else None)
    if patient_coi and product_coi and patient_coi != product_coi:
        reasons.append(_r("coi_mismatch", f"wristband COI {patient_coi} is not the bag's COI "
                                          f"{product_coi}: this product is for another patient"))
    if item is not None:
        if item.kind != ItemKind.FINAL_PRODUCT:
            reasons.append(_r("not_final_product", f"item {item.item_id} is a {item.kind}, "
                                                   "not a final-product bag"))
        administered = item.status == S.ADMINISTERED or session.scalar(
            select(Administration.id).where(Administration.item_id == item.item_id)
        ) is not None
        if administered:
            reasons.append(_r("already_administered",
                              f"bag {item.item_id} has already been administered"))
        problems = _item_problems(item, now)
        reasons.extend(problems)
        specific = {S.ADMINISTERED, S.BLOCKED, S.EXPIRED}
        if (item.kind == ItemKind.FINAL_PRODUCT and item.status not in INFUSIBLE
                and item.status not in specific):
            reasons.append(_r("status_not_infusible",
                              f"bag {item.item_id} is {item.status}; only released, "
                              "conditionally released, received or thawed bags are infused"))
        last = _last_location_event(session, item.item_id)
        if last is None or last.site_code != site_code or last.action == CustodyAction.SHIP:
            where = "in transit" if last is not None and last.action == CustodyAction.SHIP else (
                last.site_code if last is not None else "unknown")
            reasons.append(_r("wrong_site", f"the bag's last custody event is at {where}, "
                                            f"not at your site {site_code}"))
    alerts = [
        (check.payload.text if check.payload is not None else labels.normalise_scan(raw), code,
         message, check.payload.subject_id if check.payload is not None else "unknown")
        for check, raw in ((wristband, patient_raw), (product, product_raw))
        for code, message in check.reasons if code in ("bad_signature", "voided")
    ]
    warnings = _bedside_warnings(session, item) if item is not None and not reasons else []
    return BedsideResult(match=not reasons, reasons=reasons, item=item, patient=patient,
                         administer_before=post_thaw_deadline(item) if item else None,
                         label_alerts=alerts, warnings=warnings)


def _bedside_alerts(session: Session, alerts: list[tuple[str, str, str, str]],
                    site_code: str | None) -> None:
    """A forged or voided label at the bedside alerts QA as it does at a scan station."""
    for text, code, message, subject in alerts:
        _forged_alert(session, text, code, message, site_code, "bedside", subject)


def _record_verdict(
    session: Session, result: BedsideResult, patient_raw: str, product_raw: str,
    user: Person, site_code: str | None, purpose: str, product_coi: str | None = None,
) -> BedsideVerification:
    verification = BedsideVerification(
        item_id=result.item.item_id if result.item else None,
        patient_coi_id=result.patient.coi_id if result.patient else None,
        product_coi_id=result.item.coi_id if result.item else product_coi,
        patient_payload=printable(labels.normalise_scan(patient_raw), 1000),
        product_payload=printable(labels.normalise_scan(product_raw), 1000),
        match=result.match,
        reasons=json.dumps(result.reasons),
        warnings=json.dumps(result.warnings),
        purpose=purpose,
        user_id=user.id,
        site_code=site_code,
        verified_at=utcnow(),
    )
    session.add(verification)
    session.flush()
    return verification


def verify_bedside(
    session: Session, patient_payload: str, product_payload: str, *, user: Person,
    site_code: str | None,
) -> BedsideResult:
    """SPEC §6: every reason at once; the verdict is recorded."""
    result = _evaluate_bedside(session, patient_payload, product_payload, site_code)
    result.verification = _record_verdict(session, result, patient_payload, product_payload,
                                          user, site_code, "verify")
    _bedside_alerts(session, result.label_alerts, site_code)
    return result


def recorded_bedside(
    session: Session, verification_id: int, *, user: Person, site_code: str | None,
) -> BedsideResult | None:
    """The verdict a bedside check recorded, for the page's GET after the POST (post/
    redirect/get): match, reasons and warnings as recorded, the bag and patient as they
    are now. Only the clinician who checked sees it; nothing is recorded again."""
    verification = session.get(BedsideVerification, verification_id)
    if (verification is None or verification.user_id != user.id
            or verification.purpose != "verify"):
        return None
    now = _evaluate_bedside(session, verification.patient_payload,
                            verification.product_payload, site_code)
    now.match = verification.match
    now.reasons = json.loads(verification.reasons)
    now.warnings = json.loads(verification.warnings or "[]")
    now.verification = verification
    now.label_alerts = []
    return now


class BedsideRefused(DomainError):
    status, code, title = 409, "bedside_mismatch", "Do not infuse"


def administer(
    session: Session,
    patient_payload: str,
    product_payload: str,
    *,
    user: Person,
    site_code: str | None,
    signature: SignatureInput,
) -> Administration:
    """Infuse after a matching bedside check, signed by the clinician (meaning
    ``administered``). The bag row is locked first, so of concurrent requests exactly
    one administers; the unique constraint on administration.item_id backs it up."""
    probe = labels.check_payload(session, product_payload)
    if probe.payload is not None and not probe.reasons:
        # Serialise concurrent administrations of this bag before deciding anything.
        session.scalar(lock_rows(select(Item).where(Item.item_id == probe.payload.subject_id),
                                  Item))
    result = _evaluate_bedside(session, patient_payload, product_payload, site_code)
    if not result.match:
        codes = {r["code"] for r in result.reasons}
        error = BedsideRefused(
            "do not infuse: " + "; ".join(r["message"] for r in result.reasons),
            extra={"match": False, "reasons": result.reasons},
            follow_up=_verdict_follow_up(result, patient_payload, product_payload, user,
                                         site_code),
        )
        if codes == {"already_administered"}:
            error.code = "already_administered"  # type: ignore[misc]
        raise error
    item = result.item
    assert item is not None and result.patient is not None
    verification = _record_verdict(session, result, patient_payload, product_payload, user,
                                   site_code, "administration")
    signer = session.get(User, user.id)
    assert signer is not None
    signed = sign(
        session, signer, signature, entity_type="item", entity_id=item.item_id,
        content={"item_id": item.item_id, "coi_id": item.coi_id,
                 "batch_number": item.batch_number, "verification_id": verification.id,
                 "site": site_code, "warnings": result.warnings},
        meanings={Meaning.ADMINISTERED.value},
    )
    transition_item(session, item.item_id, S.ADMINISTERED,
                    reason=f"administered at {site_code}")
    administration = Administration(
        item_id=item.item_id, coi_id=item.coi_id, verification_id=verification.id,
        signature_id=signed.id, user_id=user.id, site_code=site_code or "",
        administered_at=utcnow(), warnings=json.dumps(result.warnings),
    )
    session.add(administration)
    _custody(session, item, CustodyAction.ADMINISTER, site_code=site_code,
             location=item.location, detail={"signature_id": signed.id})
    item.custodian = user.id
    session.flush()
    return administration


def _verdict_follow_up(
    result: BedsideResult, patient_raw: str, product_raw: str, user: Person,
    site_code: str | None,
) -> Any:
    """A refused administration still records its verdict, in its own transaction."""
    item_id = result.item.item_id if result.item else None
    patient_coi = result.patient.coi_id if result.patient else None
    item_coi = result.item.coi_id if result.item else None
    reasons = list(result.reasons)
    alerts = list(result.label_alerts)

    def follow_up(session: Session) -> None:
        session.info["actor"] = Actor(user.username, user.id, user.full_name)
        session.add(BedsideVerification(
            item_id=item_id, patient_coi_id=patient_coi, product_coi_id=item_coi,
            patient_payload=printable(labels.normalise_scan(patient_raw), 1000),
            product_payload=printable(labels.normalise_scan(product_raw), 1000),
            match=False, reasons=json.dumps(reasons), purpose="administration",
            user_id=user.id, site_code=site_code, verified_at=utcnow(),
        ))
        session.flush()
        _bedside_alerts(session, alerts, site_code)
        session.flush()

    return follow_up


def administration_of(session: Session, item_id: str) -> Administration | None:
    return session.scalar(select(Administration).where(Administration.item_id == item_id))


def verifications_of(session: Session, item_id: str) -> list[BedsideVerification]:
    return list(session.scalars(
        select(BedsideVerification).where(BedsideVerification.item_id == item_id)
        .order_by(BedsideVerification.id)
    ))


def count_items(session: Session, **filters: Any) -> int:
    statement = select(func.count()).select_from(Item)
    for key, value in filters.items():
        statement = statement.where(getattr(Item, key) == value)
    return session.scalar(statement) or 0



# --- read models for the API and pages ---------------------------------------------------

def custody_page(session: Session, item_id: str, *, limit: int,
                 before: int | None = None) -> tuple[list[CustodyEvent], int | None]:
    """The ``limit`` custody events of an item just before event ``before`` (the newest
    when None), oldest first, and the cursor of the page before them (None: no more).
    Keyset paging on the event id: a bag with 20,000 events costs what a new one costs."""
    return paging.keyset_page(session, select(CustodyEvent).where(
        CustodyEvent.item_id == item_id), CustodyEvent.id, limit=limit, before=before)


def item_view(session: Session, item_id: str, *, custody_limit: int | None = None,
              custody_before: int | None = None) -> dict[str, Any]:
    """An item with genealogy both ways, custody trail and labels. With
    ``custody_limit``, one page of the custody trail (the newest, or the one before
    ``custody_before``) and ``custody_older``, the cursor of the page before it."""
    item = get_item(session, item_id)
    tree = genealogy(session, item.item_id)
    data = {c.key: getattr(item, c.key) for c in Item.__mapper__.column_attrs}
    data.update(
        item=item,
        parents=parents_of(session, item.item_id),
        children=children_of(session, item.item_id),
        ancestors=tree["ancestors"],
        descendants=tree["descendants"],
        labels=labels_of(session, item.item_id),
        expiry_warnings=item.expiry_warnings,
        administration=administration_of(session, item.item_id),
        post_thaw_deadline=post_thaw_deadline(item),
        release_warnings=_bedside_warnings(session, item)
        if item.kind == ItemKind.FINAL_PRODUCT else [],
    )
    if custody_limit is None:
        data.update(custody=custody_trail(session, item.item_id), custody_older=None)
    else:
        events, older = custody_page(session, item.item_id, limit=custody_limit,
                                     before=custody_before)
        data.update(custody=events, custody_older=older)
    return data


# Who may read a patient's name, date of birth and MRN (GDPR Art. 5(1)(c) data
# minimisation, SPEC §7): people of the patient's treatment or collection sites, QA
# (release needs the identity) and admins; everyone else sees the COI and initials.
IDENTITY_FIELDS = ("given_name", "family_name", "date_of_birth", "mrn")
IDENTITY_ROLES = frozenset({"qa", "admin"})


def initials(patient: Patient) -> str:
    return f"{patient.given_name[:1]}.{patient.family_name[:1]}.".upper()


def may_see_identity(session: Session, patient: Patient, viewer: Any) -> bool:
    """True when ``viewer`` (a user; None: the system itself) may read the identity."""
    if viewer is None or IDENTITY_ROLES.intersection(viewer.roles):
        return True
    site = viewer.site.code
    if site == patient.treatment_site:
        return True
    return session.scalar(
        select(Collection.id).where(Collection.coi_id == patient.coi_id,
                                    Collection.site_code == site).limit(1)
    ) is not None


def patient_view(session: Session, coi_id: str, viewer: Any = None) -> dict[str, Any]:
    """A patient with items (the wristband included), collections and batches. With
    ``viewer``, name, date of birth and MRN only when that user may see them
    (:func:`may_see_identity`); ``initials`` always, ``identity_visible`` says which."""
    patient = get_patient(session, coi_id)
    visible = may_see_identity(session, patient, viewer)
    data = {c.key: getattr(patient, c.key) for c in Patient.__mapper__.column_attrs
            if visible or c.key not in IDENTITY_FIELDS}
    label, check = coi.format_for_label(patient.coi_id)
    collections = collections_of(session, patient.coi_id)
    data.update(
        patient=patient if visible else None,
        identity_visible=visible,
        initials=initials(patient),
        coi_label=label,
        coi_check=check,
        items=items_of_coi(session, patient.coi_id),
        collections=collections,
        batches=[brief for source in registry.patient_batches.providers()
                 for brief in source(session, patient.coi_id)],
    )
    return data


def _identity_visible_clause(viewer: Any) -> Any:
    """SQL form of :func:`may_see_identity` for a list: the patient's treatment site or
    a collection site of theirs is the viewer's, or the viewer is QA or admin."""
    from sqlalchemy import exists, true

    if viewer is None or IDENTITY_ROLES.intersection(viewer.roles):
        return true()
    site = viewer.site.code if viewer.site is not None else None
    collected_here = exists().where(Collection.coi_id == Patient.coi_id,
                                    Collection.site_code == site)
    return (Patient.treatment_site == site) | collected_here


@dataclass(frozen=True)
class PatientRow:
    """One line of the patient list: identity fields only when the viewer may see them."""

    coi_id: str
    initials: str
    treatment_site: str
    enrolled_at: datetime
    identity_visible: bool
    given_name: str | None = None
    family_name: str | None = None
    date_of_birth: date | None = None
    mrn: str | None = None


def search_patients(session: Session, text: str | None, viewer: Any, *, limit: int = 50,
                    offset: int = 0) -> list[PatientRow]:
    """Patients newest first, found by COI (any patient: the COI is not identifying), or
    by name or MRN among the patients whose identity ``viewer`` may see (GDPR Art.
    5(1)(c), SPEC §7): a search by name never tells who else is enrolled."""
    from sqlalchemy import false, or_

    visible = _identity_visible_clause(viewer)
    statement = select(Patient, visible.label("visible"))
    words = [w for w in (text or "").strip().split() if w][:6]
    if words:
        compact = "".join(words).upper()
        coi_like = compact.replace("*", "").isalnum()  # a COI's check may be '*'
        by_coi = Patient.coi_id.startswith(compact, autoescape=True) if coi_like else false()
        by_mrn = func.lower(Patient.mrn) == " ".join(words).lower()
        by_name = None
        for word in words:
            term = word.lower()
            one = or_(func.lower(Patient.given_name).contains(term, autoescape=True),
                      func.lower(Patient.family_name).contains(term, autoescape=True))
            by_name = one if by_name is None else by_name & one
        statement = statement.where(or_(by_coi, visible & or_(by_mrn, by_name)))
    statement = statement.order_by(Patient.enrolled_at.desc(), Patient.id.desc())
    rows = []
    for patient, shown in session.execute(statement.limit(limit).offset(offset)):
        shown = bool(shown)
        rows.append(PatientRow(
            coi_id=patient.coi_id, initials=initials(patient),
            treatment_site=patient.treatment_site, enrolled_at=patient.enrolled_at,
            identity_visible=shown,
            given_name=patient.given_name if shown else None,
            family_name=patient.family_name if shown else None,
            date_of_birth=patient.date_of_birth if shown else None,
            mrn=patient.mrn if shown else None,
        ))
    return rows


def find_target(session: Session, text: str) -> tuple[str, str] | None:
    """What the header's search box opens for ``text``: ("item", id) for an item id or
    a scanned label of this system (verified: a forged or voided one is refused with its
    reason), ("patient", COI) for a COI ID; None when neither."""
    if labels.normalise_scan(text).startswith("GMP1:"):
        return "item", resolve_item_ref(session, text, field_name="label")
    key = text.strip().upper().replace(" ", "")
    if key.startswith("ITM-") and key.isprintable():
        found = session.scalar(select(Item.item_id).where(Item.item_id == key))
        return ("item", found) if found else None
    if coi.coi_problem(key) is None:
        found = session.scalar(select(Patient.coi_id).where(Patient.coi_id == key))
        return ("patient", found) if found else None
    return None


# HL7 FHIR R5 value sets (fhir.resources does not enforce them).
FHIR_PRODUCT_CATEGORY = "http://hl7.org/fhir/product-category"
FHIR_PRODUCT_STATUS = "http://hl7.org/fhir/biologicallyderived-product-status"
FHIR_STATUS_CODES = frozenset({"available", "unavailable"})
ITEM_SYSTEM = "urn:gmp-mes:item-id"
COI_SYSTEM = "urn:gmp-mes:isbt128-coi"
DIN_SYSTEM = "urn:gmp-mes:isbt128-din"
AVAILABLE_STATUSES = frozenset({S.RELEASED, S.CONDITIONALLY_RELEASED, S.RECEIVED, S.THAWED,
                                S.AVAILABLE})


def fhir_status(item: Item, now: datetime | None = None) -> str:
    usable = item.status in AVAILABLE_STATUSES and not is_expired(item, now)
    return "available" if usable else "unavailable"


def fhir_product(session: Session, item_id: str) -> dict[str, Any]:
    """The item as an HL7 FHIR R5 BiologicallyDerivedProduct (JSON)."""
    item = get_item(session, item_id)
    tree = genealogy(session, item.item_id)
    source = collection_of_item(session, item.item_id)
    if source is None:
        for ancestor in tree["ancestors"]:
            source = collection_of_item(session, ancestor)
            if source is not None:
                break
    resource: dict[str, Any] = {
        "resourceType": "BiologicallyDerivedProduct",
        "id": item.item_id.replace("ITM-", "itm-").lower(),
        "identifier": [{"system": ITEM_SYSTEM, "value": item.item_id}],
        "productCategory": {"system": FHIR_PRODUCT_CATEGORY, "code": "cells",
                            "display": "Cells"},
        "productStatus": {"system": FHIR_PRODUCT_STATUS, "code": fhir_status(item),
                          "display": item.status},
        "biologicalSourceEvent": {"system": COI_SYSTEM, "value": item.coi_id},
        "parent": [{"reference": f"BiologicallyDerivedProduct/{p.replace('ITM-', 'itm-').lower()}",
                    "identifier": {"system": ITEM_SYSTEM, "value": p}}
                   for p in parents_of(session, item.item_id)],
        "processingFacility": [{"identifier": {"system": "urn:gmp-mes:site",
                                               "value": item.site_code},
                                "display": item.site_code}],
    }
    if item.description:
        resource["productCode"] = {"text": item.description}
    if item.batch_number:
        resource["division"] = item.batch_number
    if item.expires_at is not None:
        resource["expirationDate"] = audit.format_time(item.expires_at)[:19] + "Z"
    if source is not None:
        resource["collection"] = {
            "source": {"identifier": {"system": COI_SYSTEM, "value": source.coi_id},
                       "display": f"Patient {source.coi_id}"},
            "collectedDateTime": audit.format_time(source.collected_at)[:19] + "Z",
        }
        if source.din:
            resource["identifier"].append({"system": DIN_SYSTEM, "value": source.din})
    if not resource["parent"]:
        del resource["parent"]
    return resource
