"""Rooms: register, find, list; the room's record (occupancy, clearances, EM results by key)
and what needs attention at a site."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from gmp_mes.accounts import get_site
from gmp_mes.clock import utcnow
from gmp_mes.errors import AlreadyExists, NotFound, ValidationFailed
from gmp_mes.paging import keyset_page
from rooms.models import ClearanceStatus, EmResult, Grade, LineClearance, Room, RoomUse
from rooms.services._common import ROOM_CODE, get_room, normal_code, user_row

GRADES = tuple(grade.value for grade in Grade)


def create_room(session: Session, *, code: str, site_code: str, grade: str, name: str,
                user_id: int) -> Room:
    """Register a room of a site (admin). Its code, site and grade never change: a room
    regraded after requalification is registered anew (Annex 1 §4.25)."""
    errors: dict[str, list[str]] = {}
    code = normal_code(code)
    if not ROOM_CODE.fullmatch(code):
        errors["code"] = ["1 to 40 characters: letters, digits, '.' and '-', starting with "
                          "a letter or digit"]
    grade = normal_code(grade)
    if grade not in GRADES:
        errors["grade"] = ["one of A, B, C, D (A cleanest)"]
    name = (name or "").strip()
    if not name:
        errors["name"] = ["required"]
    try:
        site = get_site(session, site_code or "")
    except NotFound:
        errors["site"] = [f"no site {site_code!r}"]
    if errors:
        raise ValidationFailed("the room cannot be registered", errors=errors)
    if session.get(Room, code) is not None:
        raise AlreadyExists(f"room {code} is already registered")
    user = user_row(session, user_id)
    room = Room(code=code, site_code=site.code, grade=grade, name=name, created_by=user.id,
                created_at=utcnow())
    session.add(room)
    session.flush()
    return room


@dataclass(frozen=True)
class RoomView:
    """A room with the patient it last served (Part IV §9.42: one patient at a time)."""

    code: str
    site_code: str
    grade: str
    name: str
    created_at: datetime
    created_by: str
    last_use: RoomUse | None
    # A verified clearance after the last use: the room may serve another COI.
    cleared: bool

    @property
    def last_coi(self) -> str | None:
        return self.last_use.coi_id if self.last_use else None

    @property
    def last_batch(self) -> str | None:
        return self.last_use.batch_number if self.last_use else None


def last_use(session: Session, room_code: str) -> RoomUse | None:
    """The room's latest use (one indexed read, ix_room_use_room)."""
    return session.scalar(select(RoomUse).where(RoomUse.room_code == room_code)
                          .order_by(RoomUse.id.desc()).limit(1))


def _cleared(session: Session, room_code: str, use: RoomUse | None) -> bool:
    if use is None:
        return True
    return session.scalar(select(select(LineClearance.id).where(
        LineClearance.room_code == room_code, LineClearance.after_use_id == use.id,
        LineClearance.status == ClearanceStatus.VERIFIED.value).exists())) or False


def _view(session: Session, room: Room) -> RoomView:
    use = last_use(session, room.code)
    return RoomView(code=room.code, site_code=room.site_code, grade=room.grade, name=room.name,
                    created_at=room.created_at, created_by=room.creator.username,
                    last_use=use, cleared=_cleared(session, room.code, use))


def room_view(session: Session, code: str) -> RoomView:
    return _view(session, get_room(session, code))


def list_rooms(session: Session, *, site_code: str | None = None, limit: int = 100,
               offset: int = 0) -> list[RoomView]:
    """Rooms in code order, each with the COI it last served."""
    statement = select(Room).order_by(Room.code)
    if site_code:
        statement = statement.where(Room.site_code == normal_code(site_code))
    rows = list(session.scalars(statement.limit(limit).offset(offset)))
    return [_view(session, room) for room in rows]


@dataclass(frozen=True)
class RoomRecord:
    """One page of each of a room's trails, newest first; ``*_older``: the cursor of the
    older ones (None: none)."""

    uses: list[RoomUse]
    uses_older: int | None
    clearances: list[LineClearance]
    clearances_older: int | None
    em_results: list[EmResult]
    em_older: int | None


def room_record(session: Session, code: str, *, limit: int = 100,
                uses_before: int | None = None, clearances_before: int | None = None,
                em_before: int | None = None, sample_type: str | None = None) -> RoomRecord:
    """The occupancy log, the clearances and the EM results of a room by key (a page costs
    the same at 20 rows or 20,000: indexes on room_code, id)."""
    room = get_room(session, code)
    uses, uses_older = keyset_page(
        session, select(RoomUse).where(RoomUse.room_code == room.code), RoomUse.id,
        limit=limit, before=uses_before)
    clearances, clearances_older = keyset_page(
        session, select(LineClearance).where(LineClearance.room_code == room.code),
        LineClearance.id, limit=limit, before=clearances_before)
    em = select(EmResult).where(EmResult.room_code == room.code)
    if sample_type:
        em = em.where(EmResult.sample_type == sample_type)
    results, em_older = keyset_page(session, em, EmResult.id, limit=limit, before=em_before)
    return RoomRecord(list(reversed(uses)), uses_older, list(reversed(clearances)),
                      clearances_older, list(reversed(results)), em_older)


@dataclass(frozen=True)
class Attention:
    """A room of a site needing someone: a clearance waiting for its second person, or a
    sample type whose latest result failed (an excursion not yet followed by a pass)."""

    room_code: str
    grade: str
    what: str


def needing_attention(session: Session, site_code: str) -> list[Attention]:
    """The dashboard's list for a site (three queries)."""
    rooms = {room.code: room for room in session.scalars(
        select(Room).where(Room.site_code == site_code).order_by(Room.code))}
    if not rooms:
        return []
    found: list[Attention] = []
    waiting = session.execute(
        select(LineClearance.room_code, func.count())
        .where(LineClearance.room_code.in_(rooms),
               LineClearance.status == ClearanceStatus.PERFORMED.value)
        .group_by(LineClearance.room_code).order_by(LineClearance.room_code))
    for code, number in waiting:
        found.append(Attention(code, rooms[code].grade,
                               f"{number} line clearance(s) waiting for a second person"))
    latest = (select(EmResult.room_code, EmResult.sample_type,
                     func.max(EmResult.sampled_at).label("at"))
              .where(EmResult.room_code.in_(rooms))
              .group_by(EmResult.room_code, EmResult.sample_type).subquery())
    failing = session.execute(
        select(EmResult.room_code, EmResult.sample_type, EmResult.value)
        .join(latest, and_(latest.c.room_code == EmResult.room_code,
                           latest.c.sample_type == EmResult.sample_type,
                           latest.c.at == EmResult.sampled_at))
        .where(EmResult.passed.is_(False))
        .order_by(EmResult.room_code, EmResult.sample_type))
    for code, sample_type, value in failing:
        found.append(Attention(code, rooms[code].grade,
                               f"latest {sample_type.replace('_', ' ')} result failed "
                               f"({value} cfu): EM excursion"))
    return found
