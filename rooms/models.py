"""Records of the rooms domain (SPEC §12; EU GMP Annex 1 (2022), Part IV §9, §4.3).

- ``room``: a cleanroom of a site, of grade A (cleanest) to D. Never deleted; its code,
  site and grade do not change (a regraded room is a new room).
- ``room_use``: which batch, COI and step record was in a room when (the occupancy log,
  Part IV §9.42: segregation of one patient's materials from another's). Append-only.
  ``step_record_id`` has no foreign key: batches writes the step record.
- ``line_clearance``: a two-person line clearance (Part IV §9.43): performed and signed by
  one person, verified and signed by a second. It names the room use it clears
  (``after_use_id``): it admits another COI only while no step used the room since.
  Never deleted; the verification is its one update (a database CHECK forbids the
  performer verifying their own clearance).
- ``em_result``: an environmental monitoring result (Annex 1 §9.26-9.30), judged against
  the action limit of the room's grade and the site's alert limit in force. Append-only.
- ``em_alert_limit``: a site's alert limit per grade and sample type (Annex 1 §9.26: alert
  levels set from trend data, below the action limit). Never deleted.
- ``em_excursion_deviation``: the deviation an excursion opened on an affected batch, one
  per batch and excursion (a unique key). Append-only.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gmp_mes.audit import Audited
from gmp_mes.clock import utcnow
from gmp_mes.db import Base, UTCDateTime, check_in
from gmp_mes.models import Signature, User


class Grade(enum.StrEnum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"


class SampleType(enum.StrEnum):
    AIR_ACTIVE = "air_active"  # cfu/m³
    SETTLE_PLATE = "settle_plate"  # cfu/4 h
    CONTACT_PLATE = "contact_plate"  # cfu/plate
    GLOVE_PRINT = "glove_print"  # cfu/glove


class ClearanceStatus(enum.StrEnum):
    PERFORMED = "performed"  # one person: does not admit another COI yet
    VERIFIED = "verified"  # a second person verified it


class Room(Audited, Base):
    __tablename__ = "room"
    __table_args__ = (CheckConstraint(check_in("grade", Grade), name="grade"),)
    audit_entity = "room"

    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    site_code: Mapped[str] = mapped_column(ForeignKey("site.code"), index=True)
    grade: Mapped[str] = mapped_column(String(1))
    name: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    creator: Mapped[User] = relationship(lazy="joined")

    def audit_key(self) -> str:
        return self.code


class RoomUse(Audited, Base):
    """One step record in one room."""

    __tablename__ = "room_use"
    __table_args__ = (
        Index("ix_room_use_room", "room_code", "id"),
        Index("ix_room_use_room_at", "room_code", "at"),
        Index("ix_room_use_batch", "batch_number", "id"),
    )
    audit_entity = "room_use"

    id: Mapped[int] = mapped_column(primary_key=True)
    room_code: Mapped[str] = mapped_column(ForeignKey("room.code"))
    batch_number: Mapped[str] = mapped_column(String(32))
    coi_id: Mapped[str] = mapped_column(String(20))
    step_record_id: Mapped[int] = mapped_column(Integer)
    step_code: Mapped[str] = mapped_column(String(60))
    # The verified line clearance that admitted this COI after another's (None: the same
    # COI as the room's last use, or the room's first use). No foreign key: the
    # clearance names the use it clears, and two tables naming each other would be a
    # cycle no CREATE order satisfies.
    clearance_id: Mapped[int | None] = mapped_column(Integer)
    used_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")

    def audit_key(self) -> str:
        return f"{self.room_code}:{self.batch_number}:{self.step_record_id}"


class LineClearance(Audited, Base):
    __tablename__ = "line_clearance"
    __table_args__ = (
        CheckConstraint(check_in("status", ClearanceStatus), name="status"),
        # Part IV §9.43: the verification is a second person's; verified means signed.
        CheckConstraint("verified_by IS NULL OR verified_by <> performed_by",
                        name="second_person"),
        CheckConstraint(
            "(status = 'verified') = (verified_by IS NOT NULL AND verified_at IS NOT NULL "
            "AND verified_signature_id IS NOT NULL)", name="verified_signed"),
        Index("ix_line_clearance_room", "room_code", "id"),
    )
    audit_entity = "line_clearance"

    id: Mapped[int] = mapped_column(primary_key=True)
    room_code: Mapped[str] = mapped_column(ForeignKey("room.code"))
    # The room's last use when the clearance was performed (None: never used): the
    # clearance clears the room of that batch's material and labels.
    after_use_id: Mapped[int | None] = mapped_column(ForeignKey("room_use.id"))
    status: Mapped[str] = mapped_column(String(10), default=ClearanceStatus.PERFORMED.value)
    performed_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    performed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    performed_signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))
    verified_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    verified_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))

    performer: Mapped[User] = relationship(foreign_keys=[performed_by], lazy="joined")
    verifier: Mapped[User | None] = relationship(foreign_keys=[verified_by], lazy="joined")
    performed_signature: Mapped[Signature] = relationship(
        foreign_keys=[performed_signature_id], lazy="joined")
    verified_signature: Mapped[Signature | None] = relationship(
        foreign_keys=[verified_signature_id], lazy="joined")
    after_use: Mapped[RoomUse | None] = relationship(foreign_keys=[after_use_id],
                                                     lazy="joined")

    @property
    def verified(self) -> bool:
        return self.status == ClearanceStatus.VERIFIED

    def audit_key(self) -> str:
        return f"{self.room_code}:{self.id}"


class EmResult(Audited, Base):
    __tablename__ = "em_result"
    __table_args__ = (
        CheckConstraint(check_in("sample_type", SampleType), name="sample_type"),
        CheckConstraint(check_in("grade", Grade), name="grade"),
        CheckConstraint("value >= 0", name="value_not_negative"),
        # Passed is computed from the limits stored with it, never set by hand.
        CheckConstraint("passed = (action_limit IS NULL OR value <= action_limit)",
                        name="passed_computed"),
        CheckConstraint("NOT alert_level OR (passed AND alert_limit IS NOT NULL "
                        "AND value >= alert_limit)", name="alert_level_computed"),
        Index("ix_em_result_room_type_sampled", "room_code", "sample_type", "sampled_at"),
        Index("ix_em_result_room", "room_code", "id"),
        Index("ix_em_result_passed_sampled", "passed", "sampled_at"),
    )
    audit_entity = "em_result"

    id: Mapped[int] = mapped_column(primary_key=True)
    room_code: Mapped[str] = mapped_column(ForeignKey("room.code"))
    grade: Mapped[str] = mapped_column(String(1))  # the room's grade, as judged
    sample_type: Mapped[str] = mapped_column(String(20))
    value: Mapped[int] = mapped_column(Integer)  # colony-forming units
    sampled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    location: Mapped[str | None] = mapped_column(Text)
    # The limits in force when judged: Annex 1 Table 6 (None: Annex 1 sets none) and the
    # site's alert limit (None: none set).
    action_limit: Mapped[int | None] = mapped_column(Integer)
    alert_limit: Mapped[int | None] = mapped_column(Integer)
    passed: Mapped[bool] = mapped_column(Boolean)
    alert_level: Mapped[bool] = mapped_column(Boolean, default=False)
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))
    recorded_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    signature: Mapped[Signature] = relationship(lazy="joined")
    recorder: Mapped[User] = relationship(lazy="joined")

    def audit_key(self) -> str:
        return f"{self.room_code}:{self.id}"


class EmAlertLimit(Audited, Base):
    __tablename__ = "em_alert_limit"
    __table_args__ = (
        CheckConstraint(check_in("sample_type", SampleType), name="sample_type"),
        CheckConstraint(check_in("grade", Grade), name="grade"),
        CheckConstraint("alert_limit >= 1", name="alert_limit_positive"),
        UniqueConstraint("site_code", "grade", "sample_type",
                         name="uq_em_alert_limit_site_grade_type"),
    )
    audit_entity = "em_alert_limit"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_code: Mapped[str] = mapped_column(ForeignKey("site.code"))
    grade: Mapped[str] = mapped_column(String(1))
    sample_type: Mapped[str] = mapped_column(String(20))
    alert_limit: Mapped[int] = mapped_column(Integer)
    set_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def audit_key(self) -> str:
        return f"{self.site_code}:{self.grade}:{self.sample_type}"


class EmExcursionDeviation(Audited, Base):
    """The deviation one failed result opened on one affected batch."""

    __tablename__ = "em_excursion_deviation"
    __table_args__ = (
        # Exactly one deviation per batch per excursion, whoever links it (the entry or
        # the sweep, concurrently).
        UniqueConstraint("em_result_id", "batch_number",
                         name="uq_em_excursion_deviation_result_batch"),
        Index("ix_em_excursion_deviation_batch", "batch_number", "id"),
    )
    audit_entity = "em_excursion_deviation"

    id: Mapped[int] = mapped_column(primary_key=True)
    em_result_id: Mapped[int] = mapped_column(ForeignKey("em_result.id"))
    batch_number: Mapped[str] = mapped_column(String(32))
    # The batches domain's deviation number (no foreign key into another domain's table).
    deviation_number: Mapped[str | None] = mapped_column(String(48))
    # Why no deviation was opened (a rejected batch: nothing of it will be given).
    note: Mapped[str | None] = mapped_column(Text)
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    result: Mapped[EmResult] = relationship(lazy="joined")

    def audit_key(self) -> str:
        return f"{self.em_result_id}:{self.batch_number}"
