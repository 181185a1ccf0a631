"""Line clearance (EU GMP Part IV §9.43, Annex 1 §8.x): before a room serves another
patient, one person clears it of the previous patient's material, labels and documents
and signs (``performed``); a second person verifies and signs (``verified``). Only a
verified clearance admits another COI, and only while no step used the room since it was
performed (it names the use it clears)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes.audit import format_time
from gmp_mes.clock import utcnow
from gmp_mes.db import lock_rows
from gmp_mes.errors import NotFound, SegregationOfDuties, conflict
from gmp_mes.models import Meaning
from gmp_mes.signatures import SignatureInput, sign
from rooms.models import ClearanceStatus, LineClearance, Room, RoomUse
from rooms.services._common import get_room, user_row
from rooms.services.rooms import last_use

STATEMENT = ("the room is empty of the previous patient's material, labels and documents "
             "(line clearance, EU GMP Part IV §9.43)")


def _content(room: Room, use: RoomUse | None, at: str, action: str) -> dict[str, object]:
    """What each person signs (21 CFR 11.70: the signature binds this content)."""
    return {"room": room.code, "action": action, "statement": STATEMENT,
            "previous_batch": use.batch_number if use else None,
            "previous_coi": use.coi_id if use else None,
            "previous_step_record_id": use.step_record_id if use else None, "at": at}


def perform_clearance(session: Session, room_code: str, *, user_id: int,
                      signature: SignatureInput) -> LineClearance:
    """The first person's signed line clearance of the room after its last use."""
    # The room row serialises clearances and steps of one room: the use cleared is the last.
    room = get_room(session, room_code, for_update=True)
    user = user_row(session, user_id)
    use = last_use(session, room.code)
    now = utcnow()
    signed = sign(session, user, signature, entity_type="line_clearance",
                  entity_id=f"{room.code}:performed",
                  content=_content(room, use, format_time(now), "performed"),
                  meanings={Meaning.PERFORMED.value})
    clearance = LineClearance(room_code=room.code, after_use_id=use.id if use else None,
                              status=ClearanceStatus.PERFORMED.value, performed_by=user.id,
                              performed_at=now, performed_signature_id=signed.id)
    session.add(clearance)
    session.flush()
    return clearance


def get_clearance(session: Session, room_code: str, clearance_id: int, *,
                  for_update: bool = False) -> LineClearance:
    statement = select(LineClearance).where(LineClearance.id == clearance_id,
                                            LineClearance.room_code == room_code)
    if for_update:
        statement = lock_rows(statement, LineClearance)
    clearance = session.scalar(statement)
    if clearance is None:
        raise NotFound(f"no line clearance {clearance_id} of room {room_code}")
    return clearance


def verify_clearance(session: Session, room_code: str, clearance_id: int, *, user_id: int,
                     signature: SignatureInput) -> LineClearance:
    """The second person's signed verification (Part IV §9.43: two persons). Refused to
    the performer (403 ``segregation_of_duties``; a CHECK backs it), for a clearance
    verified already (409 ``invalid_transition``) and for one the room was used since
    (409 ``clearance_superseded``: it no longer describes the room)."""
    room = get_room(session, room_code, for_update=True)
    clearance = get_clearance(session, room.code, clearance_id, for_update=True)
    user = user_row(session, user_id)
    if clearance.status != ClearanceStatus.PERFORMED:
        raise conflict("invalid_transition",
                       f"line clearance {clearance.id} of room {room.code} is verified already")
    if clearance.performed_by == user.id:
        raise SegregationOfDuties(
            "a line clearance is verified by a second person, not by the one who performed it")
    use = last_use(session, room.code)
    if (use.id if use else None) != clearance.after_use_id:
        raise conflict("clearance_superseded",
                       f"room {room.code} was used since line clearance {clearance.id} was "
                       "performed: perform a new one")
    now = utcnow()
    signed = sign(session, user, signature, entity_type="line_clearance",
                  entity_id=f"{room.code}:{clearance.id}",
                  content={**_content(room, use, format_time(now), "verified"),
                           "clearance": clearance.id},
                  meanings={Meaning.VERIFIED.value})
    clearance.status = ClearanceStatus.VERIFIED.value
    clearance.verifier = user
    clearance.verified_at = now
    clearance.verified_signature = signed
    session.flush()
    return clearance


def admitting_clearance(session: Session, room_code: str,
                        use: RoomUse) -> LineClearance | None:
    """The verified clearance of the room after ``use`` (its last), if any."""
    return session.scalar(
        select(LineClearance).where(
            LineClearance.room_code == room_code, LineClearance.after_use_id == use.id,
            LineClearance.status == ClearanceStatus.VERIFIED.value)
        .order_by(LineClearance.id.desc()).limit(1))
