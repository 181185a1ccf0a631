"""The room check at a step (SPEC §12; EU GMP Annex 1 (2022) §4, Part IV §9.4), provided to
batches through ``gmp_mes.registry.step_requirements`` under ``room_grade``.

Every reason is collected: ``room_missing`` (the step declares a grade and no room was
given), ``room_unknown``, ``room_other_site`` (a room belongs to one site),
``room_grade_insufficient`` (A is cleanest: a step needing C may run in A, B or C) and
``line_clearance_required`` (Part IV §9.4: one patient at a time; a step of one COI in a
room whose last step was of another COI needs a verified two-person line clearance
performed after that step). A room given to a step that declares no grade is checked the
same way, without the grade: the occupancy rule holds for every use.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, lazyload

from gmp_mes.db import lock_rows
from gmp_mes.registry import Reason, StepCheck, StepContext
from rooms.models import Grade, Room, RoomUse
from rooms.services._common import normal_code
from rooms.services.clearance import admitting_clearance
from rooms.services.rooms import last_use

REASON_ORDER = ("room_missing", "room_unknown", "room_other_site", "room_grade_insufficient",
                "line_clearance_required")
# Cleanest first: a room of grade g serves a step needing any grade at or after g.
_CLEANLINESS = [grade.value for grade in Grade]

_BY_CODE = (select(Room).options(lazyload(Room.creator))
            .where(Room.code == bindparam("code")))
_LOCKED_BY_CODE = lock_rows(_BY_CODE, Room)


def grade_admits(room_grade: str, needed: str) -> bool:
    """A room of ``room_grade`` is clean enough for a step needing ``needed``."""
    return _CLEANLINESS.index(room_grade) <= _CLEANLINESS.index(needed)


def check_step_room(session: Session, ctx: StepContext) -> StepCheck:
    """The room part of a step's check (``registry.step_requirements`` "room_grade")."""
    needed = ctx.needs.room_grade
    code = normal_code(ctx.given.room)
    if needed is None and not code:
        return StepCheck()  # runs on every step that declares anything: nothing to read
    if not code:
        return StepCheck(reasons=[{
            "code": "room_missing",
            "message": f"step {ctx.step_code} happens in a room of grade {needed} or "
                       "cleaner: name the room"}])
    # Locked until commit when recording: the last use read below stays the last, so two
    # COIs cannot both enter a room cleared once (the second sees the first's use).
    room = session.scalar(_LOCKED_BY_CODE if ctx.recording else _BY_CODE, {"code": code})
    if room is None:
        return StepCheck(reasons=[{"code": "room_unknown", "message": f"no room {code}"}])
    reasons: list[Reason] = []
    if ctx.site_code is not None and room.site_code != ctx.site_code:
        reasons.append({"code": "room_other_site",
                        "message": f"room {room.code} is at site {room.site_code}, not at "
                                   f"{ctx.site_code} where the step is recorded"})
    if needed is not None and not grade_admits(room.grade, needed):
        reasons.append({"code": "room_grade_insufficient",
                        "message": f"room {room.code} is grade {room.grade}; step "
                                   f"{ctx.step_code} needs grade {needed} or cleaner"})
    previous = last_use(session, room.code)
    clearance = None
    if previous is not None and previous.coi_id != ctx.coi_id:
        clearance = admitting_clearance(session, room.code, previous)
        if clearance is None:
            reasons.append({
                "code": "line_clearance_required",
                "message": f"room {room.code} last served {previous.coi_id} (batch "
                           f"{previous.batch_number}, step {previous.step_code}): a line "
                           "clearance verified by a second person is needed first"})
    reasons.sort(key=lambda reason: REASON_ORDER.index(reason["code"]))
    clearance_id = clearance.id if clearance is not None else None
    signed = [{"room": room.code, "grade": room.grade, "name": room.name,
               "line_clearance": clearance_id,
               "label": f"room {room.code} (grade {room.grade})"}]
    room_code = room.code

    def apply(session: Session, step_record_id: int) -> None:
        """The occupancy log: one row per step record, same transaction."""
        session.add(RoomUse(room_code=room_code, batch_number=ctx.batch_number,
                            coi_id=ctx.coi_id, step_record_id=step_record_id,
                            step_code=ctx.step_code, clearance_id=clearance_id,
                            used_by=ctx.performer_id, at=ctx.at))

    return StepCheck(reasons=reasons, signed=signed, apply=apply)


def uses_of_batch(session: Session, batch_number: str) -> list[RoomUse]:
    """Every room use of a batch, oldest first (the batch record)."""
    return list(session.scalars(select(RoomUse).where(RoomUse.batch_number == batch_number)
                                .order_by(RoomUse.id)))
