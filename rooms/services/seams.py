"""What rooms answers through the seams of gmp_mes.registry: the rooms and EM excursions
sections of the executed batch record."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes.audit import format_time
from gmp_mes.localtime import local_and_utc, zone
from gmp_mes.models import Site
from gmp_mes.registry import RecordSection, RecordTable
from rooms.models import EmExcursionDeviation, EmResult, Room, RoomUse
from rooms.services.em import unit_of

ROOM_COLUMNS = ("Step", "Record", "Room", "Grade", "Line clearance", "Used by", "At")
EXCURSION_COLUMNS = ("EM result", "Room", "Sample", "Value", "Action limit", "Sampled",
                     "Deviation")


def batch_record_sections(session: Session, batch_number: str) -> list[RecordSection]:
    """The rooms a batch's steps used (Part IV §9.4: where each step happened, the line
    clearance that admitted it) and the EM excursions that affected it (Annex 1 §9)."""
    rows = session.execute(
        select(RoomUse, Room, Site.timezone)
        .join(Room, Room.code == RoomUse.room_code).join(Site, Site.code == Room.site_code)
        .where(RoomUse.batch_number == batch_number).order_by(RoomUse.id)).all()
    uses: list[dict[str, object]] = []
    use_rows: list[tuple[str, ...]] = []
    for use, room, timezone in rows:
        uses.append({"room": room.code, "grade": room.grade, "step_code": use.step_code,
                     "step_record_id": use.step_record_id, "coi_id": use.coi_id,
                     "line_clearance": use.clearance_id, "used_by": use.user.username,
                     "at": format_time(use.at)})
        use_rows.append((use.step_code, str(use.step_record_id), room.code, room.grade,
                         str(use.clearance_id) if use.clearance_id else "—",
                         f"{use.user.full_name} ({use.user.username})",
                         local_and_utc(use.at, zone(timezone))))
    found = session.execute(
        select(EmExcursionDeviation, EmResult, Site.timezone)
        .join(EmResult, EmResult.id == EmExcursionDeviation.em_result_id)
        .join(Room, Room.code == EmResult.room_code).join(Site, Site.code == Room.site_code)
        .where(EmExcursionDeviation.batch_number == batch_number)
        .order_by(EmExcursionDeviation.id)).all()
    excursions: list[dict[str, object]] = []
    excursion_rows: list[tuple[str, ...]] = []
    for link, result, timezone in found:
        unit = unit_of(result.sample_type)
        excursions.append({
            "em_result_id": result.id, "room": result.room_code, "grade": result.grade,
            "sample_type": result.sample_type, "value": result.value, "unit": unit,
            "action_limit": result.action_limit, "location": result.location,
            "sampled_at": format_time(result.sampled_at),
            "deviation": link.deviation_number, "note": link.note})
        excursion_rows.append((
            str(result.id), f"{result.room_code} (grade {result.grade})",
            result.sample_type.replace("_", " ") + (f" at {result.location}"
                                                    if result.location else ""),
            f"{result.value} {unit}", f"{result.action_limit} {unit}",
            local_and_utc(result.sampled_at, zone(timezone)),
            link.deviation_number or (link.note or "")))
    return [
        RecordSection("rooms", uses, RecordTable("Rooms used", ROOM_COLUMNS, tuple(use_rows),
                                                 empty="no room recorded")),
        RecordSection("em_excursions", excursions, RecordTable(
            "Environmental monitoring excursions", EXCURSION_COLUMNS, tuple(excursion_rows),
            empty="no EM excursion affected this batch")),
    ]
