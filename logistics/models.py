"""Records of the logistics domain (SPEC §14, chain of condition): shipments of items
between sites with the condition they travel under, the temperature log of each shipment
(its readings and their summary), every receipt with its reconciliation, and QA's signed
disposition of a shipment whose log shows an excursion or is missing.

Guards in the database itself (logistics_0001): readings, logs and receipts are
append-only, shipments and their item lists are never deleted (EU GMP Part IV 6.5,
EU GDP 9.2: transport records kept and traceable); CHECKs keep the condition a range,
a disposition tied to a hold and an acceptance justified. Storage units and placements
(where an item sat, from when to when; logistics_0002) are never deleted, one item per
position.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gmp_mes.audit import Audited
from gmp_mes.clock import utcnow
from gmp_mes.db import Base, UTCDateTime, check_in
from gmp_mes.models import Signature


class ShipmentStatus(enum.StrEnum):
    IN_TRANSIT = "in_transit"
    PARTIALLY_RECEIVED = "partially_received"  # some items still missing at receipt
    RECEIVED = "received"


class Hold(enum.StrEnum):
    """Why a shipment's items are held on receipt until QA's disposition (SPEC §14)."""

    TEMPERATURE_EXCURSION = "temperature_excursion"
    TEMPERATURE_UNKNOWN = "temperature_unknown"


class Decision(enum.StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class ShipmentCounter(Base):
    """The last shipment sequence number issued (one row, locked by each shipment)."""

    __tablename__ = "shipment_counter"

    name: Mapped[str] = mapped_column(String(20), primary_key=True)
    last_value: Mapped[int] = mapped_column(Integer)


class Shipment(Audited, Base):
    """Items sent together from one site to another under one condition; never deleted."""

    __tablename__ = "shipment"
    __table_args__ = (
        CheckConstraint(check_in("status", ShipmentStatus), name="status"),
        CheckConstraint(f"hold IS NULL OR {check_in('hold', Hold)}", name="hold"),
        CheckConstraint(f"decision IS NULL OR {check_in('decision', Decision)}",
                        name="decision"),
        CheckConstraint("min_c < max_c", name="condition_range"),
        CheckConstraint("from_site <> to_site", name="other_site"),
        # A disposition answers a hold; an acceptance carries its justification.
        CheckConstraint("decision IS NULL OR hold IS NOT NULL", name="decision_needs_hold"),
        CheckConstraint("decision IS NULL OR decision <> 'accepted' OR justification IS NOT "
                        "NULL", name="accept_justified"),
        Index("ix_shipment_open_hold", "hold", "decision"),
    )
    audit_entity = "shipment"

    shipment_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    from_site: Mapped[str] = mapped_column(ForeignKey("site.code"))
    to_site: Mapped[str] = mapped_column(ForeignKey("site.code"), index=True)
    min_c: Mapped[float] = mapped_column(Float)
    max_c: Mapped[float] = mapped_column(Float)
    shipper_id: Mapped[str | None] = mapped_column(String(60))
    logger_id: Mapped[str | None] = mapped_column(String(60))
    courier: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default=ShipmentStatus.IN_TRANSIT.value)
    shipped_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    shipped_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the last receipt
    hold: Mapped[str | None] = mapped_column(String(24))
    held_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decision: Mapped[str | None] = mapped_column(String(10))
    justification: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decision_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))

    decision_signature: Mapped[Signature | None] = relationship(lazy="joined")

    def audit_key(self) -> str:
        return self.shipment_id

    @property
    def holding(self) -> bool:
        """Its items are held now: a hold without QA's disposition."""
        return self.hold is not None and self.decision is None


class ShipmentItem(Audited, Base):
    """One item of a shipment and when it was received; never deleted."""

    __tablename__ = "shipment_item"
    __table_args__ = (UniqueConstraint("shipment_id", "item_id"),)
    audit_entity = "shipment_item"

    id: Mapped[int] = mapped_column(primary_key=True)
    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipment.shipment_id"))
    item_id: Mapped[str] = mapped_column(ForeignKey("item.item_id"), index=True)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    receipt_id: Mapped[int | None] = mapped_column(Integer)

    def audit_key(self) -> str:
        return f"{self.shipment_id}:{self.item_id}"


class ShipmentReceipt(Audited, Base):
    """One receipt at the destination: what was scanned, received, missing and
    unexpected (JSON lists), by whom and where (append-only)."""

    __tablename__ = "shipment_receipt"
    audit_entity = "shipment_receipt"

    id: Mapped[int] = mapped_column(primary_key=True)
    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipment.shipment_id"), index=True)
    site_code: Mapped[str] = mapped_column(ForeignKey("site.code"))
    received_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    received: Mapped[str] = mapped_column(Text)  # JSON list of item ids
    missing: Mapped[str] = mapped_column(Text)  # JSON list of item ids
    unexpected: Mapped[str] = mapped_column(Text)  # JSON list of {payload, item_id, code, message}
    hold: Mapped[str | None] = mapped_column(String(24))

    def audit_key(self) -> str:
        return f"{self.shipment_id}:{self.id}"


class TemperatureLog(Audited, Base):
    """A shipment's temperature log as uploaded (one per shipment, append-only): who,
    when, the SHA-256 of the file, and the summary computed from its readings."""

    __tablename__ = "temperature_log"
    __table_args__ = (CheckConstraint("readings > 0", name="readings_positive"),)
    audit_entity = "temperature_log"

    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipment.shipment_id"),
                                             primary_key=True)
    source: Mapped[str] = mapped_column(String(10))  # "csv" or "json"
    file_sha256: Mapped[str] = mapped_column(String(64))
    readings: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime)
    min_c: Mapped[float] = mapped_column(Float)
    max_c: Mapped[float] = mapped_column(Float)
    interval_s: Mapped[float | None] = mapped_column(Float)  # the median sampling interval
    gap_after_s: Mapped[float | None] = mapped_column(Float)  # longer than this is a gap
    excursions: Mapped[str] = mapped_column(Text)  # JSON list of {start, end, minutes, extreme_c}
    gaps: Mapped[str] = mapped_column(Text)  # JSON list of {start, end, minutes}
    uploaded_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def audit_key(self) -> str:
        return self.shipment_id


class TemperatureReading(Base):
    """One reading of a shipment's log (append-only; written with one executemany: the
    log's audited row carries the file's SHA-256 and the count)."""

    __tablename__ = "temperature_reading"

    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipment.shipment_id"),
                                             primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    c: Mapped[float] = mapped_column(Float)


class StorageUnit(Audited, Base):
    """A box of positions in a freezer or tank: ``SITE/FREEZER/RACK/BOX`` (SPEC §14),
    with the condition it keeps; never deleted."""

    __tablename__ = "storage_unit"
    __table_args__ = (
        CheckConstraint("positions > 0", name="positions_positive"),
        CheckConstraint("min_c < max_c", name="condition_range"),
    )
    audit_entity = "storage_unit"

    code: Mapped[str] = mapped_column(String(80), primary_key=True)
    site_code: Mapped[str] = mapped_column(ForeignKey("site.code"), index=True)
    positions: Mapped[int] = mapped_column(Integer)
    min_c: Mapped[float] = mapped_column(Float)
    max_c: Mapped[float] = mapped_column(Float)
    created_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def audit_key(self) -> str:
        return self.code


class StoragePlacement(Audited, Base):
    """An item in a position from ``placed_at`` until ``removed_at`` (never deleted).
    One open placement per position and per item: partial unique indexes, the backstop
    of the storage unit's row lock."""

    __tablename__ = "storage_placement"
    __table_args__ = (
        CheckConstraint("position > 0", name="position_positive"),
        Index("uq_storage_placement_open_position", "unit_code", "position", unique=True,
              sqlite_where=text("removed_at IS NULL"),
              postgresql_where=text("removed_at IS NULL")),
        Index("uq_storage_placement_open_item", "item_id", unique=True,
              sqlite_where=text("removed_at IS NULL"),
              postgresql_where=text("removed_at IS NULL")),
    )
    audit_entity = "storage_placement"

    id: Mapped[int] = mapped_column(primary_key=True)
    unit_code: Mapped[str] = mapped_column(ForeignKey("storage_unit.code"))
    position: Mapped[int] = mapped_column(Integer)
    item_id: Mapped[str] = mapped_column(ForeignKey("item.item_id"))
    placed_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    removed_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def audit_key(self) -> str:
        return f"{self.unit_code}:{self.position}:{self.id}"

    @property
    def ref(self) -> str:
        return f"{self.unit_code}:{self.position}"
