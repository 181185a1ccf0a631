"""Records of the materials domain (SPEC §11): the material master, the lots received,
released or rejected by QA, and every use of a lot at a step.

Guards in the database itself (materials_0001): a lot is never deleted and its
``remaining`` stays between zero and the quantity received (CHECK constraints, the
backstop of the row lock the step takes); a lot use is append-only (EU ATMP
Regulation 1394/2007 Art. 15: every substance in contact with the cells is traceable).
Quantities are exact decimals (``Numeric``): 0.1 mL taken ten times is 1 mL, not
0.9999999.
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gmp_mes.audit import Audited
from gmp_mes.clock import utcnow
from gmp_mes.db import Base, UTCDateTime, check_in
from gmp_mes.models import Signature

# Exact quantities: 9 integer digits and 6 decimals. 15 significant digits also survive
# SQLite, which keeps NUMERIC as a double: every such decimal has one nearest double and
# reads back as itself (the column type quantizes to 6 places on reading).
QUANTITY_PRECISION, QUANTITY_SCALE = 15, 6


def quantity_type() -> Numeric[Decimal]:
    return Numeric(QUANTITY_PRECISION, QUANTITY_SCALE)


class MaterialKind(enum.StrEnum):
    REAGENT = "reagent"
    VECTOR = "vector"
    MEDIUM = "medium"
    CONSUMABLE = "consumable"
    EXCIPIENT = "excipient"


class LotStatus(enum.StrEnum):
    QUARANTINE = "quarantine"
    RELEASED = "released"
    REJECTED = "rejected"


class Material(Audited, Base):
    """One material of the master: its code is what process steps name (SPEC §11)."""

    __tablename__ = "material"
    __table_args__ = (CheckConstraint(check_in("kind", MaterialKind), name="kind"),)
    audit_entity = "material"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    unit: Mapped[str] = mapped_column(String(20))
    storage: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def audit_key(self) -> str:
        return self.code


class LotCounter(Base):
    """The last lot sequence number issued (one row, locked by each receipt)."""

    __tablename__ = "lot_counter"

    name: Mapped[str] = mapped_column(String(20), primary_key=True)
    last_value: Mapped[int] = mapped_column(Integer)


class MaterialLot(Audited, Base):
    """A lot received: in quarantine until QA releases or rejects it; never deleted."""

    __tablename__ = "material_lot"
    __table_args__ = (
        CheckConstraint(check_in("status", LotStatus), name="status"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("remaining >= 0", name="remaining_not_negative"),
        CheckConstraint("remaining <= quantity", name="remaining_within_quantity"),
        Index("ix_material_lot_status_expires_at", "status", "expires_at"),
    )
    audit_entity = "material_lot"

    lot_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    material_code: Mapped[str] = mapped_column(ForeignKey("material.code"), index=True)
    supplier: Mapped[str] = mapped_column(String(200))
    supplier_lot: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    quantity: Mapped[Decimal] = mapped_column(quantity_type())
    remaining: Mapped[Decimal] = mapped_column(quantity_type())
    status: Mapped[str] = mapped_column(String(12), default=LotStatus.QUARANTINE.value)
    coa_reference: Mapped[str | None] = mapped_column(String(200))
    site_code: Mapped[str | None] = mapped_column(ForeignKey("site.code"))
    received_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decision_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    reject_reason: Mapped[str | None] = mapped_column(Text)

    material: Mapped[Material] = relationship(lazy="joined")
    decision_signature: Mapped[Signature | None] = relationship(lazy="joined")

    def audit_key(self) -> str:
        return self.lot_id


class LotUse(Audited, Base):
    """One use of a lot at a step record (append-only). ``step_record_id`` has no foreign
    key: step records belong to batches, a layer above this one."""

    __tablename__ = "lot_use"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        Index("ix_lot_use_lot_batch", "lot_id", "batch_number"),
        Index("ix_lot_use_batch", "batch_number"),
    )
    audit_entity = "lot_use"

    id: Mapped[int] = mapped_column(primary_key=True)
    lot_id: Mapped[str] = mapped_column(ForeignKey("material_lot.lot_id"))
    material_code: Mapped[str] = mapped_column(String(32))
    batch_number: Mapped[str] = mapped_column(String(40))
    coi_id: Mapped[str] = mapped_column(String(14))
    step_record_id: Mapped[int] = mapped_column(Integer)
    step_code: Mapped[str] = mapped_column(String(60))
    quantity: Mapped[Decimal] = mapped_column(quantity_type())
    used_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def audit_key(self) -> str:
        return f"{self.lot_id}:{self.id}"
