"""Patients and collections: enrolment (COI ID, wristband), apheresis collections, and
what a label of an item shows (:func:`label_data`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

import processes.services as processes
from gmp_mes.clock import utcnow
from gmp_mes.errors import AlreadyExists, ValidationFailed, conflict, field_error
from gmp_mes.models import Site, SiteKind
from identity import coi
from identity.models import CoiCounter, Collection, ItemKind, ItemStatus, Patient
from identity.services._common import _actor, _bedside_warnings, _facility_id
from identity.services.items import create_item
from identity.services.lookup import get_item, get_patient
from identity.services.rules import COLLECTION_CLOCK_SKEW, KIND_CODES, MAX_COLLECTION_AGE, STORAGE

S = ItemStatus


def _next_coi(session: Session, facility_id: str, year: int) -> str:
    """Allocate the next COI sequence of the year in one atomic upsert: concurrent
    enrolments serialise on the counter row (on both databases), never sharing a number."""
    prefix = f"{facility_id}{year % 100:02d}"
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    table = cast(Table, CoiCounter.__table__)
    statement = (
        insert(table).values(prefix=prefix, last_value=1)
        .on_conflict_do_update(index_elements=["prefix"],
                               set_={"last_value": table.c.last_value + 1})
        .returning(table.c.last_value)
    )
    value: int = session.execute(statement).scalar_one()
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


def first_collected(session: Session, coi_ids: Iterable[str]) -> dict[str, datetime]:
    """Each named patient's first apheresis (the earliest ``collected_at``), one query:
    where the vein-to-vein time starts (schedule's report). Patients without a
    collection are left out."""
    ids = sorted(set(coi_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(Collection.coi_id, func.min(Collection.collected_at))
        .where(Collection.coi_id.in_(ids)).group_by(Collection.coi_id))
    return {coi_id: at for coi_id, at in rows}


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
