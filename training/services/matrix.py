"""The training matrix (EU GMP Part IV 3.1: an up-to-date record of who is trained in
what): the people of a site against every qualification code granted or declared by an
approved process step, each cell the person's standing now; what runs out soon."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

import processes.services as processes
from gmp_mes.accounts import list_users
from gmp_mes.models import User
from training.models import Qualification, RecordStatus
from training.services.records import Standing, records_of, standing_of

# A qualification running out within this is highlighted (the matrix, the dashboard)
# and warned about by the sweep (the longest of its thresholds).
SOON = timedelta(days=30)
EXPIRING_SOON = "expiring_soon"  # a cell's status besides valid, expired, revoked, none


def declared_codes(session: Session) -> set[str]:
    """The qualifications the steps of approved process versions declare."""
    codes: set[str] = set()
    for version in processes.list_processes(session):
        if version.approved:
            codes.update(step.needs.qualification
                         for step in processes.definition_of(version).steps
                         if step.needs.qualification)
    return codes


def granted_codes(session: Session) -> set[str]:
    return set(session.scalars(select(Qualification.code).distinct()))


@dataclass(frozen=True)
class Cell:
    standing: Standing
    status: str  # valid, expiring_soon, expired, revoked, none


@dataclass(frozen=True)
class MatrixRow:
    user: User
    cells: list[Cell]


@dataclass(frozen=True)
class Matrix:
    site_code: str
    codes: list[str]
    rows: list[MatrixRow]
    declared: set[str]  # codes a step of an approved process needs


def cell_status(standing: Standing, now: datetime) -> str:
    if standing.expiring_by(now + SOON):
        return EXPIRING_SOON
    return standing.status


def training_matrix(session: Session, site_code: str, now: datetime) -> Matrix:
    """The active people of ``site_code`` (by user name) x the codes (by code)."""
    people = [u for u in list_users(session) if u.active and u.site.code == site_code]
    declared = declared_codes(session)
    codes = sorted(declared | granted_codes(session))
    found = records_of(session, [u.id for u in people]) if people else {}
    rows = []
    for user in people:
        records = found.get(user.id, [])
        cells = []
        for code in codes:
            standing = standing_of(records, code, now)
            cells.append(Cell(standing, cell_status(standing, now)))
        rows.append(MatrixRow(user, cells))
    return Matrix(site_code, codes, rows, declared)


@dataclass(frozen=True)
class Expiring:
    user: User
    standing: Standing


def expiring_within(session: Session, now: datetime, within: timedelta = SOON
                    ) -> list[Expiring]:
    """Qualifications held now whose validity (the longest record of the person and
    code: a renewal counts) ends within ``within``, soonest first. One indexed range read
    finds the candidates; their people's records of those codes decide."""
    candidates = list(session.scalars(
        select(Qualification).where(Qualification.valid_until > now,
                                    Qualification.valid_until <= now + within)))
    keys = {(r.user_id, r.code) for r in candidates}
    if not keys:
        return []
    found = records_of(session, sorted({user_id for user_id, _ in keys}))
    out = []
    for user_id, code in sorted(keys):
        records = found.get(user_id, [])
        standing = standing_of(records, code, now)
        if standing.status == RecordStatus.VALID and standing.expiring_by(now + within):
            assert standing.record is not None
            out.append(Expiring(standing.record.user, standing))
    return sorted(out, key=lambda e: (e.standing.valid_until, e.user.username, e.standing.code))
