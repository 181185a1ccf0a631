"""Records of the schedule domain (SPEC §13).

- ``room_booking``: a manufacturing room held for one patient's batch over the window the
  process's ``[schedule]`` gives (batch start to fill), with the release and expiry it
  implies and the warnings computed against the planned infusion when it was booked or
  last rescheduled. Never deleted: a cancellation and a reschedule are audited updates
  with their reason (21 CFR 11.10(e): the trail keeps every earlier window). Two booked
  windows of one room never overlap: the service locks the room row and checks, and the
  database refuses an overlap itself (PostgreSQL: an exclusion constraint; SQLite: a
  trigger, its writers queue on one lock).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gmp_mes.audit import Audited
from gmp_mes.clock import utcnow
from gmp_mes.db import Base, UTCDateTime, check_in
from gmp_mes.models import User


class BookingStatus(enum.StrEnum):
    BOOKED = "booked"  # holds the room over its window
    CANCELLED = "cancelled"  # frees it; kept for the record


class RoomBooking(Audited, Base):
    __tablename__ = "room_booking"
    __table_args__ = (
        CheckConstraint(check_in("status", BookingStatus), name="status"),
        CheckConstraint("manufacturing_end > manufacturing_start", name="window"),
        CheckConstraint("manufacturing_start >= apheresis_at", name="start_after_apheresis"),
        CheckConstraint("planned_infusion_at > apheresis_at", name="infusion_after_apheresis"),
        CheckConstraint("(status = 'cancelled') = (cancelled_at IS NOT NULL)",
                        name="cancelled"),
        Index("ix_room_booking_room_start", "room_code", "manufacturing_start"),
        Index("ix_room_booking_coi", "coi_id"),
        Index("ix_room_booking_batch", "batch_number"),
    )
    audit_entity = "room_booking"

    id: Mapped[int] = mapped_column(primary_key=True)
    coi_id: Mapped[str] = mapped_column(ForeignKey("patient.coi_id"))
    process_code: Mapped[str] = mapped_column(String(32))
    process_version: Mapped[int] = mapped_column(Integer)
    room_code: Mapped[str] = mapped_column(ForeignKey("room.code"))
    apheresis_at: Mapped[datetime] = mapped_column(UTCDateTime)
    planned_infusion_at: Mapped[datetime] = mapped_column(UTCDateTime)
    manufacturing_start: Mapped[datetime] = mapped_column(UTCDateTime)
    manufacturing_end: Mapped[datetime] = mapped_column(UTCDateTime)
    release_expected: Mapped[datetime] = mapped_column(UTCDateTime)
    product_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    thaw_from: Mapped[datetime | None] = mapped_column(UTCDateTime)  # no post-thaw: None
    # JSON list of {"code", "message"}: what was warned when booked or last rescheduled.
    warnings: Mapped[str] = mapped_column(Text, default="[]")
    status: Mapped[str] = mapped_column(String(16), default=BookingStatus.BOOKED.value)
    # The batch started for this patient on this booking (set once, by batches' start).
    batch_number: Mapped[str | None] = mapped_column(ForeignKey("batch.batch_number"))
    revision: Mapped[int] = mapped_column(Integer, default=1)  # 1 + reschedules
    booked_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    booked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    cancelled_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_reason: Mapped[str | None] = mapped_column(Text)

    booker: Mapped[User] = relationship(foreign_keys=[booked_by], lazy="joined")

    def audit_key(self) -> str:
        return str(self.id)
