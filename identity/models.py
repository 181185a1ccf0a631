"""Records of the identity domain: patients, collections, items and their genealogy,
custody events, bedside verifications and administrations.

Guards in the database itself (identity_0001): items and patients are never
deleted; custody events, bedside verdicts, administrations and genealogy links
are append-only; a genealogy link between items of two COIs is refused by a
trigger, and an item's COI can never be changed (the autologous rule).
"""

from __future__ import annotations

import enum
import json
from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from gmp_mes.audit import Audited
from gmp_mes.clock import utcnow
from gmp_mes.db import Base, UTCDateTime, check_in


class ItemKind(enum.StrEnum):
    STARTING_MATERIAL = "starting_material"
    INTERMEDIATE = "intermediate"
    FINAL_PRODUCT = "final_product"
    QC_SAMPLE = "qc_sample"
    RETENTION_SAMPLE = "retention_sample"
    WRISTBAND = "wristband"


class ItemStatus(enum.StrEnum):
    QUARANTINE = "quarantine"
    RELEASED = "released"
    CONDITIONALLY_RELEASED = "conditionally_released"
    REJECTED = "rejected"
    SHIPPED = "shipped"
    RECEIVED = "received"
    THAWED = "thawed"
    ADMINISTERED = "administered"
    EXPIRED = "expired"
    DESTROYED = "destroyed"
    BLOCKED = "blocked"
    IN_PROCESS = "in_process"
    CONSUMED = "consumed"
    AVAILABLE = "available"


class CustodyAction(enum.StrEnum):
    CREATE = "create"
    HANDOVER = "handover"
    MOVE = "move"
    SHIP = "ship"
    RECEIVE = "receive"
    THAW = "thaw"
    SCAN = "scan"
    ADMINISTER = "administer"


class CoiCounter(Base):
    """Last COI sequence number used per facility and enrolment year."""

    __tablename__ = "coi_counter"

    prefix: Mapped[str] = mapped_column(String(7), primary_key=True)  # FIN + 2-digit year
    last_value: Mapped[int] = mapped_column(Integer)


class Patient(Audited, Base):
    __tablename__ = "patient"
    __table_args__ = (UniqueConstraint("treatment_site", "mrn"),)
    audit_entity = "patient"

    id: Mapped[int] = mapped_column(primary_key=True)
    coi_id: Mapped[str] = mapped_column(String(14), unique=True)
    given_name: Mapped[str] = mapped_column(String(100))
    family_name: Mapped[str] = mapped_column(String(100))
    date_of_birth: Mapped[date] = mapped_column(Date)
    mrn: Mapped[str] = mapped_column(String(40))
    treatment_site: Mapped[str] = mapped_column(ForeignKey("site.code"))
    wristband_item_id: Mapped[str | None] = mapped_column(String(12))
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enrolled_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))

    def audit_key(self) -> str:
        return self.coi_id


class Item(Audited, Base):
    """One physical container. Its COI never changes (database trigger)."""

    __tablename__ = "item"
    __table_args__ = (
        CheckConstraint(check_in("kind", ItemKind), name="kind"),
        CheckConstraint(check_in("status", ItemStatus), name="status"),
        Index("ix_item_status_expires_at", "status", "expires_at"),
    )
    audit_entity = "item"

    item_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(24))
    coi_id: Mapped[str] = mapped_column(ForeignKey("patient.coi_id"), index=True)
    batch_number: Mapped[str | None] = mapped_column(String(40), index=True)
    description: Mapped[str | None] = mapped_column(Text)
    site_code: Mapped[str] = mapped_column(ForeignKey("site.code"))
    location: Mapped[str | None] = mapped_column(String(100))
    custodian: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    # Destination of the shipment in progress (set by ship, cleared by receive).
    ship_to: Mapped[str | None] = mapped_column(String(32))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expiry_warnings: Mapped[str | None] = mapped_column(String(200))  # "PT24H,PT4H"
    post_thaw_window: Mapped[str | None] = mapped_column(String(40))  # "PT3H"
    thawed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def audit_key(self) -> str:
        return self.item_id


class ItemParent(Base):
    """Genealogy: ``item_id`` was made from ``parent_id`` (same COI, trigger-enforced)."""

    __tablename__ = "item_parent"

    item_id: Mapped[str] = mapped_column(ForeignKey("item.item_id"), primary_key=True)
    parent_id: Mapped[str] = mapped_column(ForeignKey("item.item_id"), primary_key=True,
                                           index=True)


class Collection(Audited, Base):
    __tablename__ = "collection"
    __table_args__ = (CheckConstraint("volume_ml > 0", name="volume_positive"),)
    audit_entity = "collection"

    id: Mapped[int] = mapped_column(primary_key=True)
    coi_id: Mapped[str] = mapped_column(ForeignKey("patient.coi_id"), index=True)
    collected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    site_code: Mapped[str] = mapped_column(ForeignKey("site.code"))
    volume_ml: Mapped[float] = mapped_column(Numeric(8, 1, asdecimal=False))
    din: Mapped[str | None] = mapped_column(String(14), unique=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("item.item_id"), unique=True)
    recorded_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))


class CustodyEvent(Audited, Base):
    """Chain of custody: who held, moved, shipped, received, thawed or scanned an item,
    where and when (server time). Append-only (database triggers)."""

    __tablename__ = "custody_event"
    __table_args__ = (
        CheckConstraint(check_in("action", CustodyAction), name="action"),
        Index("ix_custody_event_item", "item_id", "id"),
    )
    audit_entity = "custody_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("item.item_id"))
    action: Mapped[str] = mapped_column(String(12))
    site_code: Mapped[str | None] = mapped_column(String(32))
    location: Mapped[str | None] = mapped_column(String(100))
    destination_site: Mapped[str | None] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(String(64))
    workstation: Mapped[str | None] = mapped_column(String(100))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ok: Mapped[bool | None] = mapped_column(Boolean)  # scans: the verdict shown
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    detail: Mapped[str | None] = mapped_column(Text)  # JSON: reasons, flags


class BedsideVerification(Audited, Base):
    """The recorded verdict of one bedside check (SPEC §6). Append-only."""

    __tablename__ = "bedside_verification"
    audit_entity = "bedside_verification"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[str | None] = mapped_column(String(40), index=True)
    patient_coi_id: Mapped[str | None] = mapped_column(String(14))
    product_coi_id: Mapped[str | None] = mapped_column(String(14))
    patient_payload: Mapped[str] = mapped_column(Text)
    product_payload: Mapped[str] = mapped_column(Text)
    match: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[str] = mapped_column(Text)  # JSON list of {"code","message"}
    # JSON list of {"code","message"} shown with a MATCH (conditional release).
    warnings: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    purpose: Mapped[str] = mapped_column(String(20))  # verify | administration
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    site_code: Mapped[str | None] = mapped_column(String(32))
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Administration(Audited, Base):
    """An infusion. One per item: the unique constraint makes a second one impossible."""

    __tablename__ = "administration"
    audit_entity = "administration"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("item.item_id"), unique=True)
    coi_id: Mapped[str] = mapped_column(ForeignKey("patient.coi_id"))
    verification_id: Mapped[int] = mapped_column(ForeignKey("bedside_verification.id"))
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    site_code: Mapped[str] = mapped_column(String(32))
    administered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # What the clinician was warned of when infusing (SPEC §6: conditional release).
    warnings: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")

    @property
    def warning_list(self) -> list[dict[str, str]]:
        return json.loads(self.warnings or "[]")
