"""The follow-up schedule (SPEC §16): visits planned at the administration from the
process's ``[follow_up]``, and the one rule that says whether a visit is due, done,
overdue or ended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from batches import services as batches
from gmp_mes.clock import utcnow
from gmp_mes.durations import parse_duration
from gmp_mes.registry import AdministrationFacts
from identity import services as identity
from outcomes.models import FollowUpRecord, FollowUpVisit, VisitState
from processes.definitions import FollowUp


@dataclass(frozen=True)
class PlannedVisit:
    visit: str  # its code: the definition's duration ("P28D") or the year ("P2Y")
    due_at: datetime
    overdue_at: datetime


def anniversary(at: datetime, years: int) -> datetime:
    """``at`` plus whole calendar years (29 February falls on 28 February)."""
    try:
        return at.replace(year=at.year + years)
    except ValueError:
        return at.replace(year=at.year + years, day=28)


def plan(follow_up: FollowUp, administered_at: datetime) -> list[PlannedVisit]:
    """The visits of ``[follow_up]``: each listed duration after the administration, then a
    visit on each anniversary after the last of them up to ``long_term_years`` years (the
    long-term follow-up of gene-modified cells, e.g. 15 years). Each turns overdue
    ``window`` after its due time."""
    planned = []
    for text in follow_up.visits:
        due = administered_at + parse_duration(text)
        planned.append(PlannedVisit(text, due, due + follow_up.window))
    last = planned[-1].due_at
    for year in range(1, follow_up.long_term_years + 1):
        due = anniversary(administered_at, year)
        if due > last:
            planned.append(PlannedVisit(f"P{year}Y", due, due + follow_up.window))
    return planned


def visit_label(visit: str) -> str:
    """"P28D" -> "Day 28", "P2Y" -> "Year 2" (other durations as written)."""
    if visit.startswith("P") and visit.endswith("Y") and visit[1:-1].isdigit():
        return f"Year {visit[1:-1]}"
    if visit.startswith("P") and visit.endswith("D") and visit[1:-1].isdigit():
        return f"Day {visit[1:-1]}"
    return visit


def schedule_visits(session: Session, facts: AdministrationFacts) -> list[FollowUpVisit]:
    """Provider of ``registry.administered``: plan the batch's visits when its first bag is
    infused (a later bag of the same batch keeps that schedule; the unique constraint on
    (batch, visit) backs it). A process without ``[follow_up]`` plans nothing."""
    if facts.batch_number is None:
        return []
    already = session.scalar(select(exists().where(
        FollowUpVisit.batch_number == facts.batch_number)))
    # A bag named after no manufactured batch (items recorded outside the batch record,
    # as identity's own tests do) has no process to follow up by.
    if already or batches.find_batch_number(session, facts.batch_number) is None:
        return []
    batch = batches.get_batch(session, facts.batch_number)
    follow_up = batches.definition_of_batch(batch).follow_up
    if follow_up is None:
        return []
    visits = [
        FollowUpVisit(coi_id=facts.coi_id, batch_number=facts.batch_number,
                      item_id=facts.item_id, visit=p.visit, seq=seq,
                      administered_at=facts.administered_at, due_at=p.due_at,
                      overdue_at=p.overdue_at, site_code=facts.site_code,
                      process_code=batch.process_code, process_version=batch.process_version)
        for seq, p in enumerate(plan(follow_up, facts.administered_at), start=1)
    ]
    session.add_all(visits)
    session.flush()
    return visits


def state_of(visit: FollowUpVisit, recorded: bool, death: date | None,
             now: datetime) -> VisitState:
    """The one rule of a visit's state (SPEC §16): ``done`` once recorded; ``ended`` when
    the patient died before it was due (nothing more is due, no alert); ``overdue`` once
    its window has passed unrecorded; ``due`` until then."""
    if recorded:
        return VisitState.DONE
    if death is not None and death < visit.due_at.date():
        return VisitState.ENDED
    if now >= visit.overdue_at:
        return VisitState.OVERDUE
    return VisitState.DUE


@dataclass(frozen=True)
class VisitView:
    visit: FollowUpVisit
    state: VisitState
    record: FollowUpRecord | None  # the current version, if recorded

    @property
    def label(self) -> str:
        return visit_label(self.visit.visit)


def current_records(session: Session, coi_id: str) -> list[FollowUpRecord]:
    """The current version of each recorded visit of a patient (none superseded it)."""
    newer = select(FollowUpRecord.supersedes_id).where(
        FollowUpRecord.coi_id == coi_id, FollowUpRecord.supersedes_id.is_not(None))
    return list(session.scalars(
        select(FollowUpRecord).where(FollowUpRecord.coi_id == coi_id,
                                     FollowUpRecord.id.not_in(newer))
        .order_by(FollowUpRecord.assessed_at, FollowUpRecord.id)))


def death_of(records: list[FollowUpRecord]) -> date | None:
    """The recorded date of death (the earliest, should two records disagree)."""
    dates = [r.death_date for r in records if r.death_date is not None]
    return min(dates) if dates else None


def visits_of(session: Session, coi_id: str, now: datetime | None = None) -> list[VisitView]:
    """A patient's visits (every administered batch with a follow-up), in due order."""
    patient = identity.get_patient(session, coi_id)
    now = now or utcnow()
    records = current_records(session, patient.coi_id)
    by_visit = {r.visit_id: r for r in records}
    death = death_of(records)  # the patient's, whichever batch's visit recorded it
    visits = session.scalars(select(FollowUpVisit).where(FollowUpVisit.coi_id == patient.coi_id)
                             .order_by(FollowUpVisit.due_at, FollowUpVisit.id))
    return [VisitView(v, state_of(v, v.id in by_visit, death, now),
                      by_visit.get(v.id))
            for v in visits]


def on_administered(session: Session, facts: AdministrationFacts) -> None:
    """The ``registry.administered`` provider."""
    schedule_visits(session, facts)
