"""Records of the equipment domain (SPEC §11; 21 CFR 211.67, 211.68, 211.182).

- ``equipment``: the registry. Never deleted (database trigger); what changes over its
  life is written in its logbook, not on the row.
- ``equipment_event``: the logbook (calibrated, maintained, cleaned, out of service,
  returned to service), each event e-signed. Append-only: a mistaken entry is followed by
  a new one, never edited (21 CFR 211.182, EU GMP Annex 11 §9).
- ``equipment_use``: which batch, step and person used a piece of equipment when (the
  equipment use log of 21 CFR 211.182). Append-only. ``step_record_id`` has no foreign
  key: batches sits above equipment and writes the step record.

The status is computed from the logbook, never stored (``equipment.services.status``).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gmp_mes.audit import Audited
from gmp_mes.clock import utcnow
from gmp_mes.db import Base, UTCDateTime, check_in
from gmp_mes.models import Signature, User


class EventKind(enum.StrEnum):
    CALIBRATED = "calibrated"  # 21 CFR 211.68: calibrated on a written schedule
    MAINTAINED = "maintained"
    CLEANED = "cleaned"  # 21 CFR 211.67: cleaned at appropriate intervals
    OUT_OF_SERVICE = "out_of_service"
    RETURNED_TO_SERVICE = "returned_to_service"


class EquipmentStatus(enum.StrEnum):
    IN_SERVICE = "in_service"
    OUT_OF_SERVICE = "out_of_service"
    CALIBRATION_OVERDUE = "calibration_overdue"


class Equipment(Audited, Base):
    __tablename__ = "equipment"
    audit_entity = "equipment"

    # Upper case in the label alphabet ([0-9A-Z][0-9A-Z.-]{0,39}): it is the subject id of
    # its EQP label payload.
    equipment_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(48), index=True)  # processes EQUIPMENT_TYPE
    name: Mapped[str] = mapped_column(String(200))
    site_code: Mapped[str] = mapped_column(ForeignKey("site.code"), index=True)
    # ISO 8601 duration (P365D); None: the equipment needs no calibration schedule.
    calibration_interval: Mapped[str | None] = mapped_column(String(40))
    cleaning_required: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    creator: Mapped[User] = relationship(lazy="joined")

    def audit_key(self) -> str:
        return self.equipment_id


class EquipmentEvent(Audited, Base):
    """One signed logbook entry."""

    __tablename__ = "equipment_event"
    __table_args__ = (
        CheckConstraint(check_in("kind", EventKind), name="kind"),
        # A calibration states how long it holds; no other event does.
        CheckConstraint("(kind = 'calibrated') = (valid_until IS NOT NULL)",
                        name="valid_until_calibrated"),
        CheckConstraint("kind <> 'out_of_service' OR reason IS NOT NULL",
                        name="out_of_service_reason"),
        # The latest event of each kind of one equipment: one index range (status).
        Index("ix_equipment_event_equipment_kind", "equipment_id", "kind", "id"),
        Index("ix_equipment_event_equipment", "equipment_id", "id"),
    )
    audit_entity = "equipment_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    equipment_id: Mapped[str] = mapped_column(ForeignKey("equipment.equipment_id"))
    kind: Mapped[str] = mapped_column(String(30))
    reason: Mapped[str | None] = mapped_column(Text)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))
    recorded_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    signature: Mapped[Signature] = relationship(lazy="joined")
    recorder: Mapped[User] = relationship(lazy="joined")

    def audit_key(self) -> str:
        return f"{self.equipment_id}:{self.id}"


class EquipmentUse(Audited, Base):
    """One use of one piece of equipment at one step record."""

    __tablename__ = "equipment_use"
    __table_args__ = (
        Index("ix_equipment_use_equipment", "equipment_id", "id"),
        Index("ix_equipment_use_equipment_used_at", "equipment_id", "used_at"),
        Index("ix_equipment_use_batch", "batch_number", "id"),
    )
    audit_entity = "equipment_use"

    id: Mapped[int] = mapped_column(primary_key=True)
    equipment_id: Mapped[str] = mapped_column(ForeignKey("equipment.equipment_id"))
    batch_number: Mapped[str] = mapped_column(String(32))
    coi_id: Mapped[str] = mapped_column(String(20))
    step_record_id: Mapped[int] = mapped_column(Integer)
    step_code: Mapped[str] = mapped_column(String(60))
    used_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")

    def audit_key(self) -> str:
        return f"{self.equipment_id}:{self.batch_number}:{self.step_record_id}"
