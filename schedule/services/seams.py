"""What schedule answers through the seams of gmp_mes.registry: the booking section of
the executed batch record (and the batch page), and the booking's link to the batch."""

from __future__ import annotations

from sqlalchemy.orm import Session

from gmp_mes.audit import format_time
from gmp_mes.registry import RecordSection, RecordTable
from schedule.services.bookings import bookings_of_batch, warnings_of, when_text

BOOKING_COLUMNS = ("Booking", "Room", "Manufacturing window", "Release expected",
                   "Planned infusion", "Warnings when booked")


def batch_record_sections(session: Session, batch_number: str) -> list[RecordSection]:
    """The room booking the batch started on (SPEC §13), with the warnings it carried."""
    bookings = bookings_of_batch(session, batch_number)
    if not bookings:
        return []
    data: list[dict[str, object]] = []
    rows: list[tuple[str, ...]] = []
    for b in bookings:
        warnings = warnings_of(b)
        data.append({
            "booking_id": b.id, "room": b.room_code, "coi_id": b.coi_id,
            "process_code": b.process_code, "process_version": b.process_version,
            "apheresis_at": format_time(b.apheresis_at),
            "manufacturing_start": format_time(b.manufacturing_start),
            "manufacturing_end": format_time(b.manufacturing_end),
            "release_expected": format_time(b.release_expected),
            "planned_infusion_at": format_time(b.planned_infusion_at),
            "warnings": warnings, "revision": b.revision,
            "booked_by": b.booker.username, "booked_at": format_time(b.booked_at)})
        rows.append((
            f"{b.id} (revision {b.revision})", b.room_code,
            f"{when_text(b.manufacturing_start)} to {when_text(b.manufacturing_end)}",
            when_text(b.release_expected), when_text(b.planned_infusion_at),
            ", ".join(w["code"] for w in warnings) or "none"))
    return [RecordSection("booking", data, RecordTable("Room booking", BOOKING_COLUMNS,
                                                       tuple(rows)))]
