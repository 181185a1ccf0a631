"""Scheduler job: one ``follow_up_overdue`` alert per visit left unrecorded past its window
(SPEC §16). The cause ``follow_up_overdue:<visit id>`` is unique, so reruns and
overlapping sweeps never raise one twice; a visit of a patient whose death is recorded
raises nothing (``ended``). The alert goes to the clinicians of the site that infused the
patient and to QA; recording the visit acknowledges it."""

from __future__ import annotations

from datetime import date, datetime

from flask import Flask
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from gmp_mes.alerts import AlertSpec, Severity, raise_alert
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.localtime import in_utc
from outcomes.models import FollowUpRecord, FollowUpVisit, VisitState
from outcomes.services.records import OVERDUE_KIND, patient_death
from outcomes.services.visits import state_of, visit_label

ACTOR = Actor.system("outcomes-sweep")


def overdue_specs(session: Session, now: datetime) -> list[AlertSpec]:
    unrecorded = ~exists().where(FollowUpRecord.visit_id == FollowUpVisit.id)
    visits = session.scalars(select(FollowUpVisit).where(FollowUpVisit.overdue_at <= now,
                                                         unrecorded)
                             .order_by(FollowUpVisit.id))
    deaths: dict[str, date | None] = {}
    specs = []
    for visit in visits:
        if visit.coi_id not in deaths:
            deaths[visit.coi_id] = patient_death(session, visit.coi_id)
        death = deaths[visit.coi_id]
        if state_of(visit, False, death, now) is not VisitState.OVERDUE:
            continue
        specs.append(AlertSpec(
            cause=f"{OVERDUE_KIND}:{visit.id}", kind=OVERDUE_KIND,
            severity=Severity.MAJOR.value, subject_type="follow_up_visit",
            subject_id=str(visit.id),
            message=f"follow-up {visit_label(visit.visit)} of patient {visit.coi_id} (batch "
                    f"{visit.batch_number}) was due {in_utc(visit.due_at)} and is not "
                    f"recorded",
            roles=("clinician", "qa"), site_code=visit.site_code, due_at=visit.due_at))
    return specs


def sweep(session: Session, now: datetime | None = None) -> list[str]:
    """Raise the alerts in the caller's transaction; one line per new alert."""
    if session.info.get("actor") is None:
        session.info["actor"] = ACTOR
    now = now or utcnow()
    return [f"follow-up overdue: {spec.message}" for spec in overdue_specs(session, now)
            if raise_alert(session, spec) is not None]


def job(app: Flask) -> list[str]:
    """Scheduler job (``registry.add_job``): one sweep in its own transaction."""
    with app.extensions["gmp_mes.db"].transaction(actor=ACTOR) as session:
        return sweep(session)
