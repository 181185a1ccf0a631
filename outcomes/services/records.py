"""Follow-up records (SPEC §16): response, CRS and ICANS elements with their computed
grades, survival; signed by the clinician; corrected only by a new version with a reason."""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gmp_mes import audit
from gmp_mes.alerts import resolve_for_subject
from gmp_mes.clock import utcnow
from gmp_mes.db import lock_rows
from gmp_mes.errors import NotFound, conflict, field_error
from gmp_mes.models import Meaning, User
from gmp_mes.signatures import SignatureInput, sign
from identity import services as identity
from outcomes import grading
from outcomes.models import FollowUpRecord, FollowUpVisit, Response
from outcomes.services.visits import current_records, death_of

OVERDUE_KIND = "follow_up_overdue"
# An assessment time a little ahead of the server clock is a clock difference, not a
# visit in the future (the bedside device and the server may disagree by seconds).
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Grades:
    crs_grade: int | None
    icans_grade: int | None


def crs_elements(raw: dict[str, Any]) -> grading.CrsElements:
    """Typed CRS elements from the loaded schema (names as SPEC §16)."""
    return grading.CrsElements(
        fever=bool(raw["fever"]),
        hypotension=grading.Hypotension(raw.get("hypotension", "none")),
        hypoxia=grading.Hypoxia(raw.get("hypoxia", "none")),
        fever_masked_by_treatment=bool(raw.get("fever_masked_by_treatment", False)))


def icans_elements(raw: dict[str, Any]) -> grading.IcansElements:
    return grading.IcansElements(
        ice_score=int(raw["ice_score"]),
        consciousness=grading.Consciousness(raw.get("consciousness", "alert")),
        seizure=grading.Seizure(raw.get("seizure", "none")),
        motor=grading.Motor(raw.get("motor", "none")),
        cerebral_edema=grading.CerebralEdema(raw.get("cerebral_edema", "none")))


def grades(crs: dict[str, Any] | None, icans: dict[str, Any] | None) -> Grades:
    """The ASTCT 2019 grades of the elements given (None: not assessed). The dry run
    ("Check grades") and the record compute them here, never from input."""
    return Grades(
        crs_grade=None if crs is None else grading.crs_grade(crs_elements(crs)),
        icans_grade=None if icans is None else grading.icans_grade(icans_elements(icans)))


def _normalised(elements: grading.CrsElements | grading.IcansElements) -> dict[str, Any]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(elements).items()}


def _visit(session: Session, coi_id: str, visit: str, batch_number: str | None) -> FollowUpVisit:
    """The scheduled visit, locked until commit (two clinicians recording the same visit
    are serialised: the second finds the first's record)."""
    statement = select(FollowUpVisit).where(FollowUpVisit.coi_id == coi_id,
                                            FollowUpVisit.visit == visit)
    if batch_number:
        statement = statement.where(FollowUpVisit.batch_number == batch_number)
    found = list(session.scalars(lock_rows(statement.order_by(FollowUpVisit.id),
                                           FollowUpVisit)))
    if not found:
        raise field_error("visit", f"no scheduled visit {visit} for patient {coi_id}"
                          + (f" and batch {batch_number}" if batch_number else ""))
    if len(found) > 1:
        raise field_error("batch_number", f"patient {coi_id} has visit {visit} for batches "
                          f"{', '.join(v.batch_number for v in found)}: name the batch")
    return found[0]


def _check_times(visit: FollowUpVisit, assessed_at: datetime, alive: bool,
                 death_date: date | None, now: datetime) -> None:
    if assessed_at > now + CLOCK_SKEW:
        raise field_error("assessed_at", "an assessment cannot lie in the future")
    if assessed_at < visit.administered_at:
        raise field_error("assessed_at", "the assessment lies before the administration")
    if alive and death_date is not None:
        raise field_error("death_date", "a date of death is given only when alive is false")
    if not alive:
        if death_date is None:
            raise field_error("death_date", "a death needs its date")
        if death_date < visit.administered_at.date() or death_date > now.date():
            raise field_error("death_date", "the date of death lies between the "
                                            "administration and today")
        if death_date > assessed_at.date():
            raise field_error("death_date", "the date of death lies after the assessment")


def record_follow_up(
    session: Session,
    coi_id: str,
    *,
    visit: str,
    assessed_at: datetime,
    response: str,
    alive: bool,
    user_id: int,
    signature: SignatureInput,
    crs: dict[str, Any] | None = None,
    icans: dict[str, Any] | None = None,
    death_date: date | None = None,
    batch_number: str | None = None,
    corrects: int | None = None,
    reason: str | None = None,
) -> FollowUpRecord:
    """Record a visit (or, with ``corrects`` and ``reason``, a correction: a new version
    of that record, the original kept). Signed ``performed`` by the clinician; the CRS
    and ICANS grades are computed from the elements (ASTCT 2019, ``outcomes.grading``)."""
    patient = identity.get_patient(session, coi_id)
    scheduled = _visit(session, patient.coi_id, visit, batch_number)
    now = utcnow()
    if response not in set(Response):
        raise field_error("response", f"one of {', '.join(Response)}")
    _check_times(scheduled, assessed_at, alive, death_date, now)
    records = current_records(session, patient.coi_id)
    current = next((r for r in records if r.visit_id == scheduled.id), None)
    # A death recorded at another visit stands until that record is corrected.
    death = death_of([r for r in records if r.visit_id != scheduled.id])
    if death is not None and alive and assessed_at.date() > death:
        raise field_error("alive", f"the patient's death on {death.isoformat()} is recorded "
                                   "at another visit: correct that record first")
    version, supersedes, why = 1, None, None
    if corrects is not None:
        why = (reason or "").strip()
        if not why:
            raise field_error("reason", "a correction needs a reason")
        old = session.get(FollowUpRecord, corrects)
        if old is None or old.visit_id != scheduled.id:
            raise field_error("corrects", f"no record {corrects} of visit {visit}")
        if current is None or current.id != old.id:
            raise conflict("superseded", f"record {corrects} is not the current record of "
                                         f"visit {visit} (already corrected): reload")
        version, supersedes = old.version + 1, old.id
    elif current is not None:
        raise conflict("follow_up_recorded", f"visit {visit} is already recorded (record "
                                             f"{current.id}): correct it with a reason")
    crs_typed = None if crs is None else crs_elements(crs)
    icans_typed = None if icans is None else icans_elements(icans)
    computed = grades(crs, icans)
    crs_json = None if crs_typed is None else _normalised(crs_typed)
    icans_json = None if icans_typed is None else _normalised(icans_typed)
    content = {
        "coi_id": patient.coi_id, "batch_number": scheduled.batch_number, "visit": visit,
        "version": version, "supersedes_id": supersedes, "correction_reason": why,
        "assessed_at": audit.format_time(assessed_at), "response": response,
        "crs": crs_json, "icans": icans_json, "crs_grade": computed.crs_grade,
        "icans_grade": computed.icans_grade, "alive": alive,
        "death_date": death_date.isoformat() if death_date else None,
    }
    signer = session.get(User, user_id)
    if signer is None:
        raise NotFound(f"no user {user_id}")
    signed = sign(session, signer, signature, entity_type="follow_up_record",
                  entity_id=f"{scheduled.batch_number}:{visit}:{version}", content=content,
                  meanings={Meaning.PERFORMED.value})
    record = FollowUpRecord(
        visit_id=scheduled.id, coi_id=patient.coi_id, batch_number=scheduled.batch_number,
        visit=visit, version=version, supersedes_id=supersedes, correction_reason=why,
        assessed_at=assessed_at, response=response,
        crs=None if crs_json is None else json.dumps(crs_json, sort_keys=True),
        icans=None if icans_json is None else json.dumps(icans_json, sort_keys=True),
        crs_grade=computed.crs_grade, icans_grade=computed.icans_grade, alive=alive,
        death_date=death_date, recorded_by=user_id, recorded_at=now, signature_id=signed.id)
    session.add(record)
    try:
        with audit.reason(session, f"correction: {why}") if why else nullcontext():
            session.flush()
    except IntegrityError as exc:  # the locks serialise; the unique keys back them up
        raise conflict("superseded", f"visit {visit} was recorded meanwhile: reload") from exc
    resolve_for_subject(session, "follow_up_visit", str(scheduled.id), (OVERDUE_KIND,),
                        f"visit {visit} recorded")
    return record


def record_of(session: Session, record_id: int) -> FollowUpRecord:
    record = session.get(FollowUpRecord, record_id)
    if record is None:
        raise NotFound(f"no follow-up record {record_id}")
    return record


def versions_of(session: Session, visit_id: int) -> list[FollowUpRecord]:
    """Every version of a visit's record, oldest first (corrections keep the original)."""
    return list(session.scalars(select(FollowUpRecord).where(
        FollowUpRecord.visit_id == visit_id).order_by(FollowUpRecord.version)))


def patient_death(session: Session, coi_id: str) -> date | None:
    return death_of(current_records(session, coi_id))
