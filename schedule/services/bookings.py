"""Room bookings (SPEC §13): a manufacturing room held for one patient's batch.

The plan is computed once, here, from the process version in force when booked (its
``[schedule]`` and shelf lives):

- ``manufacturing_start``: the stated start, else the apheresis time (a fresh product
  starts on arrival); ``manufacturing_end`` = start + ``manufacturing`` (the fill);
  ``release_expected`` = fill + ``release``; ``product_expires_at`` = fill + the final
  product's shelf life (its expiry runs from the fill); ``thaw_from`` = the planned
  infusion - the post-thaw window (the earliest thaw that still allows it).
- Warnings (the booking is still made; each is a {"code", "message"}):
  ``hold_time_exceeded`` (start later than the starting material's hold time after the
  apheresis), ``release_after_infusion`` (the release decision is expected after the
  planned infusion), ``qc_result_after_infusion`` (a test's ``time_to_result`` after the
  fill ends after the planned infusion: only a conditional release could make it),
  ``expires_before_infusion`` (the product's expiry is before the planned infusion).

A room holds one booked window at a time (half-open: one may start when the previous
ends). Booking and rescheduling lock the room rows first (one at a time per room), then
check; the database refuses what would slip by (schedule_0001). Cancel and reschedule
need a reason, kept in the audit trail with the earlier values (21 CFR 11.10(e)); neither
is allowed once a batch started on the booking (the room is then in use).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

import identity.services as identity
import processes.services as processes
import rooms.services as rooms
from gmp_mes import audit, charts, registry
from gmp_mes.accounts import Person
from gmp_mes.clock import utcnow
from gmp_mes.db import lock_rows
from gmp_mes.errors import NotFound, ValidationFailed, conflict, field_error
from processes.definitions import ProcessDefinition
from schedule.models import BookingStatus, RoomBooking

WARNING_CODES = ("hold_time_exceeded", "release_after_infusion", "qc_result_after_infusion",
                 "expires_before_infusion")
BOOKING_ROLES = ("clinician", "operator", "admin")
MAX_LIST = 500


@dataclass(frozen=True)
class Plan:
    """What a booking implies, computed from the process definition (module docstring)."""

    manufacturing_start: datetime
    manufacturing_end: datetime
    release_expected: datetime
    product_expires_at: datetime
    thaw_from: datetime | None
    warnings: tuple[registry.Reason, ...]

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(w["code"] for w in self.warnings)


def span_text(delta: timedelta | None) -> str:
    """A duration as people read it on the page: "20 d 1 h 5 min" (minutes dropped past
    a day)."""
    if delta is None:
        return ""
    sign = "-" if delta < timedelta(0) else ""
    seconds = abs(delta.total_seconds())
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days} d"] if days else []
    parts += [f"{hours} h"] if hours or days else []
    parts += [f"{minutes} min"] if not days else []
    return sign + " ".join(parts or ["0 min"])


def when_text(at: datetime) -> str:
    """A time in a stored message or the record: UTC to the minute, named."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _late(what: datetime, than: datetime) -> str:
    return span_text(what - than)


def plan_booking(definition: ProcessDefinition, *, apheresis_at: datetime,
                 planned_infusion_at: datetime,
                 manufacturing_start: datetime | None = None) -> Plan:
    """The windows and the warnings of a booking (module docstring); the definition must
    declare ``[schedule]``."""
    schedule = definition.schedule
    assert schedule is not None, "plan_booking needs a [schedule]"
    start = manufacturing_start or apheresis_at
    fill = start + schedule.manufacturing
    release = fill + schedule.release
    expires = fill + definition.final_product_shelf_life
    warnings: list[registry.Reason] = []
    hold_ends = apheresis_at + definition.starting_material_hold
    if start > hold_ends:
        warnings.append({"code": "hold_time_exceeded", "message": (
            f"manufacturing starts {_late(start, hold_ends)} after the starting material's "
            f"hold time ({span_text(definition.starting_material_hold)} after the "
            "apheresis) ends")})
    if release > planned_infusion_at:
        warnings.append({"code": "release_after_infusion", "message": (
            f"the release decision is expected {when_text(release)}, "
            f"{_late(release, planned_infusion_at)} after the planned infusion")})
    late_tests = [(q.test, fill + q.time_to_result) for q in definition.qc
                  if q.time_to_result is not None
                  and fill + q.time_to_result > planned_infusion_at]
    if late_tests:
        named = ", ".join(f"{test} ({when_text(at)})" for test, at in late_tests)
        warnings.append({"code": "qc_result_after_infusion", "message": (
            f"results come after the planned infusion: {named}; only a conditional "
            "release could make it")})
    if expires < planned_infusion_at:
        warnings.append({"code": "expires_before_infusion", "message": (
            f"the product expires {when_text(expires)}, "
            f"{_late(planned_infusion_at, expires)} before the planned infusion")})
    thaw_from = (planned_infusion_at - definition.post_thaw
                 if definition.post_thaw is not None else None)
    return Plan(start, fill, release, expires, thaw_from, tuple(warnings))


# --- reading ----------------------------------------------------------------------------

def warnings_of(booking: RoomBooking) -> list[registry.Reason]:
    found: list[registry.Reason] = json.loads(booking.warnings)
    return found


def get_booking(session: Session, booking_id: int, *, for_update: bool = False
                ) -> RoomBooking:
    statement = select(RoomBooking).where(RoomBooking.id == booking_id)
    if for_update:
        statement = lock_rows(statement, RoomBooking)
    booking = session.scalar(statement)
    if booking is None:
        raise NotFound(f"no booking {booking_id}")
    return booking


def day_bounds(start: date | None, end: date | None) -> tuple[datetime | None, datetime | None]:
    """UTC days ``start`` to ``end`` (inclusive) as times; None leaves that side open."""
    if start is not None and end is not None and start > end:
        raise field_error("from", "must not be after 'to'")
    low = datetime.combine(start, time(), UTC) if start else None
    high = datetime.combine(end + timedelta(days=1), time(), UTC) if end else None
    return low, high


def list_bookings(session: Session, *, start: datetime | None = None,
                  end: datetime | None = None, room: str | None = None,
                  coi_id: str | None = None, status: str | None = None,
                  limit: int = MAX_LIST) -> list[RoomBooking]:
    """Bookings whose manufacturing window meets [start, end), by window start."""
    statement = select(RoomBooking)
    if start is not None:
        statement = statement.where(RoomBooking.manufacturing_end > start)
    if end is not None:
        statement = statement.where(RoomBooking.manufacturing_start < end)
    if room:
        statement = statement.where(RoomBooking.room_code == rooms.normal_code(room))
    if coi_id:
        statement = statement.where(RoomBooking.coi_id == coi_id.strip().upper())
    if status:
        statement = statement.where(RoomBooking.status == status)
    statement = statement.order_by(RoomBooking.manufacturing_start, RoomBooking.id)
    return list(session.scalars(statement.limit(limit)))


def bookings_of_batch(session: Session, batch_number: str) -> list[RoomBooking]:
    return list(session.scalars(select(RoomBooking).where(
        RoomBooking.batch_number == batch_number).order_by(RoomBooking.id)))


def can_change(booking: RoomBooking) -> bool:
    """Cancel and reschedule: only a booked window no batch started on yet."""
    return booking.status == BookingStatus.BOOKED and booking.batch_number is None


# --- booking ----------------------------------------------------------------------------

def _schedulable(session: Session, process_code: str) -> tuple[int, ProcessDefinition]:
    """The newest QA-approved version of the process and its definition (it must declare
    ``[schedule]``)."""
    code = (process_code or "").strip().upper()
    try:
        version = processes.newest_approved(session, code)
    except NotFound:
        raise field_error("process_code", f"no process {code!r}") from None
    definition = processes.definition_of(version)
    if definition.schedule is None:
        raise field_error("process_code", (
            f"{code} v{version.version} declares no [schedule] (manufacturing and release "
            "durations): it cannot be booked"))
    return version.version, definition


def _room(session: Session, code: str, definition: ProcessDefinition, *, field: str = "room"
          ) -> str:
    """The room, locked (one booking at a time per room), clean enough for every step."""
    try:
        room = rooms.get_room(session, code, for_update=True)
    except NotFound:
        raise field_error(field, f"no room {code!r}") from None
    needed = sorted({s.needs.room_grade for s in definition.steps if s.needs.room_grade})
    too_clean = [g for g in needed if not rooms.grade_admits(room.grade, g)]
    if too_clean:
        raise field_error(field, (
            f"room {room.code} is grade {room.grade}; {definition.code} "
            f"v{definition.version} has steps needing grade {too_clean[0]}"))
    return room.code


def _check_times(apheresis_at: datetime, planned_infusion_at: datetime,
                 manufacturing_start: datetime | None) -> None:
    errors: dict[str, list[str]] = {}
    if planned_infusion_at <= apheresis_at:
        errors["planned_infusion_at"] = ["must be after the apheresis"]
    if manufacturing_start is not None and manufacturing_start < apheresis_at:
        errors["manufacturing_start"] = ["must not be before the apheresis"]
    if errors:
        raise ValidationFailed("the booking's times do not fit together", errors=errors)


def _refuse_overlap(session: Session, room_code: str, plan: Plan,
                    booking_id: int | None = None) -> None:
    statement = select(RoomBooking).where(
        RoomBooking.room_code == room_code,
        RoomBooking.status == BookingStatus.BOOKED.value,
        RoomBooking.manufacturing_start < plan.manufacturing_end,
        RoomBooking.manufacturing_end > plan.manufacturing_start)
    if booking_id is not None:
        statement = statement.where(RoomBooking.id != booking_id)
    other = session.scalar(statement.order_by(RoomBooking.manufacturing_start).limit(1))
    if other is not None:
        raise conflict("room_booked", (
            f"room {room_code} is booked from {when_text(other.manufacturing_start)} to "
            f"{when_text(other.manufacturing_end)} (booking {other.id}); the window "
            f"{when_text(plan.manufacturing_start)} to "
            f"{when_text(plan.manufacturing_end)} overlaps it"),
            extra={"booking_id": other.id})


def _apply(booking: RoomBooking, plan: Plan) -> None:
    booking.manufacturing_start = plan.manufacturing_start
    booking.manufacturing_end = plan.manufacturing_end
    booking.release_expected = plan.release_expected
    booking.product_expires_at = plan.product_expires_at
    booking.thaw_from = plan.thaw_from
    booking.warnings = json.dumps(list(plan.warnings))


def book_room(session: Session, *, user: Person, coi_id: str, process_code: str, room: str,
              apheresis_at: datetime, planned_infusion_at: datetime,
              manufacturing_start: datetime | None = None) -> RoomBooking:
    """Book ``room`` for the patient's batch (SPEC §13): 409 ``room_booked`` when its
    window overlaps another booked one; the warnings are computed and kept."""
    _check_times(apheresis_at, planned_infusion_at, manufacturing_start)
    try:
        patient = identity.get_patient(session, coi_id)
    except NotFound as exc:
        raise field_error("coi_id", exc.detail) from None
    version, definition = _schedulable(session, process_code)
    room_code = _room(session, room, definition)
    plan = plan_booking(definition, apheresis_at=apheresis_at,
                        planned_infusion_at=planned_infusion_at,
                        manufacturing_start=manufacturing_start)
    _refuse_overlap(session, room_code, plan)
    booking = RoomBooking(
        coi_id=patient.coi_id, process_code=definition.code, process_version=version,
        room_code=room_code, apheresis_at=apheresis_at,
        planned_infusion_at=planned_infusion_at, status=BookingStatus.BOOKED.value,
        revision=1, booked_by=user.id, booked_at=utcnow())
    _apply(booking, plan)
    session.add(booking)
    session.flush()
    return booking


def _changeable(session: Session, booking_id: int, action: str) -> RoomBooking:
    booking = get_booking(session, booking_id, for_update=True)
    if booking.status != BookingStatus.BOOKED:
        raise conflict("booking_cancelled",
                       f"booking {booking_id} is cancelled: it cannot be {action}")
    if booking.batch_number is not None:
        raise conflict("booking_in_use", (
            f"batch {booking.batch_number} started on booking {booking_id}: the room is in "
            f"use, the booking cannot be {action}"))
    return booking


def cancel_booking(session: Session, booking_id: int, *, user: Person, reason: str
                   ) -> RoomBooking:
    """Cancel a booking (frees the room's window); the reason goes into the audit trail."""
    booking = _changeable(session, booking_id, "cancelled")
    with audit.reason(session, reason):
        booking.status = BookingStatus.CANCELLED.value
        booking.cancelled_by = user.id
        booking.cancelled_at = utcnow()
        booking.cancel_reason = reason
        session.flush()
    return booking


def reschedule_booking(session: Session, booking_id: int, *, user: Person, reason: str,
                       apheresis_at: datetime | None = None,
                       planned_infusion_at: datetime | None = None,
                       room: str | None = None,
                       manufacturing_start: datetime | None = None) -> RoomBooking:
    """New times (or room) for a booking, on the process version it was booked with; the
    plan and its warnings are computed again, the earlier values stay in the audit trail
    with the reason. A new apheresis time without a start moves the start with it."""
    booking = _changeable(session, booking_id, "rescheduled")
    version = processes.get_process_version(session, booking.process_code,
                                            booking.process_version)
    definition = processes.definition_of(version)
    apheresis = apheresis_at or booking.apheresis_at
    infusion = planned_infusion_at or booking.planned_infusion_at
    start = manufacturing_start
    if start is None and apheresis_at is None:
        start = booking.manufacturing_start
    _check_times(apheresis, infusion, start)
    new_room = rooms.normal_code(room or booking.room_code)
    for code in sorted({booking.room_code, new_room}):  # one lock order: codes sorted
        _room(session, code, definition)
    plan = plan_booking(definition, apheresis_at=apheresis, planned_infusion_at=infusion,
                        manufacturing_start=start)
    _refuse_overlap(session, new_room, plan, booking.id)
    with audit.reason(session, reason):
        booking.apheresis_at = apheresis
        booking.planned_infusion_at = infusion
        booking.room_code = new_room
        booking.revision += 1
        _apply(booking, plan)
        session.flush()
    return booking


# --- a batch starts (registry.batch_started) ----------------------------------------------

def link_started_batch(session: Session, started: registry.StartedBatch) -> None:
    """Provider of ``registry.batch_started``: the patient's earliest booked window of that
    process with no batch yet gets the batch (in the start's transaction, audited)."""
    booking = session.scalar(lock_rows(select(RoomBooking).where(
        RoomBooking.coi_id == started.coi_id,
        RoomBooking.process_code == started.process_code,
        RoomBooking.status == BookingStatus.BOOKED.value,
        RoomBooking.batch_number.is_(None),
    ).order_by(RoomBooking.manufacturing_start, RoomBooking.id).limit(1), RoomBooking))
    if booking is not None:
        booking.batch_number = started.batch_number
        session.flush()


def booking_codes(bookings: Sequence[RoomBooking]) -> dict[int, tuple[str, ...]]:
    """Each booking's warning codes (pages badge them)."""
    return {b.id: tuple(w["code"] for w in warnings_of(b)) for b in bookings}


# --- the /schedule page's chart -------------------------------------------------------------

def bookable_processes(session: Session) -> list[str]:
    """Process codes whose newest QA-approved version declares ``[schedule]``."""
    codes = sorted({v.code for v in processes.list_processes(session)})
    found = []
    for code in codes:
        version = processes.newest_version(session, code, approved_only=True)
        if version is not None and processes.definition_of(version).schedule is not None:
            found.append(code)
    return found


def _bar_kind(booking: RoomBooking) -> Literal["planned", "warning", "done"]:
    if booking.batch_number is not None:
        return "done"
    return "warning" if warnings_of(booking) else "planned"


def schedule_chart(bookings: Sequence[RoomBooking], rows: Sequence[str], start: datetime,
                   end: datetime, zone: ZoneInfo) -> charts.Chart:
    """Rooms over weeks (a Gantt chart): each booked window a bar labelled with its COI,
    orange when it carries warnings, grey once its batch started."""
    booked = [b for b in bookings if b.status == BookingStatus.BOOKED and b.room_code in rows]
    codes = booking_codes(booked)
    spans = [charts.Timespan(row=b.room_code, start=b.manufacturing_start,
                             end=b.manufacturing_end, label=b.coi_id, kind=_bar_kind(b))
             for b in booked]
    described = "; ".join(
        f"{b.room_code}: {b.coi_id} {when_text(b.manufacturing_start)} to "
        f"{when_text(b.manufacturing_end)}"
        + (f" (warnings: {', '.join(codes[b.id])})" if codes[b.id] else "") for b in booked)
    return charts.Chart(
        title="Manufacturing rooms booked", y_label="",
        alt=(f"Room bookings from {start:%Y-%m-%d} to {end:%Y-%m-%d}: "
             + (described or "none")),
        timespans=spans, rows=tuple(rows), x_range=(start, end), zone=zone,
        width_in=11.0, height_in=max(1.8, 0.45 * len(rows) + 1.2), legend=False)
