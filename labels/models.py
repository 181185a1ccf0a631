"""Records of the labels domain: every print and every void (print control).

Both tables are append-only (database triggers, see labels_0001): a print or a
void is a fact that is never changed or deleted (EU GMP Annex 11 §9, 21 CFR 11.10(e)).
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
from sqlalchemy.orm import Mapped, mapped_column

from gmp_mes.audit import Audited
from gmp_mes.clock import utcnow
from gmp_mes.db import Base, UTCDateTime, check_in


class LabelFormat(enum.StrEnum):
    PNG = "png"
    SVG = "svg"
    PDF = "pdf"
    ZPL = "zpl"


class LabelPrint(Audited, Base):
    """One printed copy of an item's label (SPEC §4: each copy has its own serial).

    Rows from before serials (``serial`` NULL) are one print of N identical copies
    of the older 6-field payload: those copies cannot be told apart, so a void of
    such a row voids all of them.
    """

    __tablename__ = "label_print"
    __table_args__ = (
        CheckConstraint(check_in("format", LabelFormat), name="format"),
        CheckConstraint("copies BETWEEN 1 AND 100", name="copies"),
        # A reprint always carries its reason (print control).
        CheckConstraint("reprint = false OR reason IS NOT NULL", name="reprint_reason"),
        # One serial names one copy of one item; a copy is replaced at most once.
        Index("ix_label_print_item_id_serial", "item_id", "serial", unique=True),
        Index("ix_label_print_replaces", "replaces", unique=True),
    )
    audit_entity = "label"

    id: Mapped[int] = mapped_column(primary_key=True)
    label_id: Mapped[str] = mapped_column(String(16), unique=True)
    item_id: Mapped[str] = mapped_column(String(12), ForeignKey("item.item_id"), index=True)
    kind_code: Mapped[str] = mapped_column(String(2))
    coi_id: Mapped[str] = mapped_column(String(14))
    # SHA-256 of the payload text: the payload itself is reproducible from the item.
    payload_digest: Mapped[str] = mapped_column(String(64), index=True)
    key_id: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(8))
    copies: Mapped[int] = mapped_column(Integer, default=1)
    workstation: Mapped[str | None] = mapped_column(String(100))
    reprint: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    # The item status printed as a banner (expired, rejected, blocked), or None.
    status_banner: Mapped[str | None] = mapped_column(String(40))
    printed_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    printed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The copy number in the payload (1, 2, ... per item); NULL for 6-field labels.
    serial: Mapped[int | None] = mapped_column(Integer)
    # SHA-256 of what the label says without serial and signature (GMP1:kind:id:coi:
    # expiry): copies with the same content are the same label, another content
    # supersedes them. NULL for 6-field labels (their payload_digest says it).
    content_digest: Mapped[str | None] = mapped_column(String(64))
    # The voided copy (label_id) this copy replaced, in the same transaction.
    replaces: Mapped[str | None] = mapped_column(String(16))

    def audit_key(self) -> str:
        return self.label_id


class AssetLabelPrint(Audited, Base):
    """One printed copy of the label of a material lot (``LOT``) or a piece of equipment
    (``EQP``), SPEC §11: the subject lives in a domain above labels (materials,
    equipment), so it is named by kind code and id, without a foreign key. Append-only
    (labels_0004); the unique indexes back print control: one serial names one copy of
    one subject, one payload one copy."""

    __tablename__ = "asset_label_print"
    __table_args__ = (
        CheckConstraint("kind_code IN ('LOT', 'EQP')", name="kind_code"),
        CheckConstraint(check_in("format", LabelFormat), name="format"),
        CheckConstraint("serial >= 1", name="serial"),
        CheckConstraint("reprint = false OR reason IS NOT NULL", name="reprint_reason"),
        Index("ix_asset_label_print_subject_serial", "kind_code", "subject_id", "serial",
              unique=True),
    )
    audit_entity = "asset_label"

    id: Mapped[int] = mapped_column(primary_key=True)
    label_id: Mapped[str] = mapped_column(String(16), unique=True)
    kind_code: Mapped[str] = mapped_column(String(3))
    subject_id: Mapped[str] = mapped_column(String(40))
    serial: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(8))
    # SHA-256 of the payload text: check_payload finds the copy by it (one indexed read).
    payload_digest: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[str] = mapped_column(String(16))
    workstation: Mapped[str | None] = mapped_column(String(100))
    reprint: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    printed_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    printed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def audit_key(self) -> str:
        return self.label_id


class LabelVoid(Audited, Base):
    """The voiding of a label: its payload never verifies online again."""

    __tablename__ = "label_void"
    audit_entity = "label_void"

    id: Mapped[int] = mapped_column(primary_key=True)
    label_id: Mapped[str] = mapped_column(
        String(16), ForeignKey("label_print.label_id"), unique=True
    )
    payload_digest: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(Text)
    voided_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    voided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def audit_key(self) -> str:
        return self.label_id


class LabelStock(Audited, Base):
    """The label stock (size) a site loads for one kind of label (issue 15); a kind
    without a row prints on the default 4 x 2 inch stock."""

    __tablename__ = "label_stock"
    __table_args__ = (
        CheckConstraint("stock IN ('2x1', '3x2', '4x2')", name="stock"),
        UniqueConstraint("site_code", "kind"),
    )
    audit_entity = "label_stock"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_code: Mapped[str] = mapped_column(String(32), ForeignKey("site.code"))
    kind: Mapped[str] = mapped_column(String(24))
    stock: Mapped[str] = mapped_column(String(8))

    def audit_key(self) -> str:
        return f"{self.site_code}/{self.kind}"


class LabelPrinter(Audited, Base):
    """A networked label printer of a site, reached by raw TCP (Zebra: port 9100)."""

    __tablename__ = "label_printer"
    __table_args__ = (
        CheckConstraint("dpi IN (203, 300)", name="dpi"),
        CheckConstraint("port BETWEEN 1 AND 65535", name="port"),
        UniqueConstraint("site_code", "name"),
    )
    audit_entity = "label_printer"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_code: Mapped[str] = mapped_column(String(32), ForeignKey("site.code"))
    name: Mapped[str] = mapped_column(String(60))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=9100)
    dpi: Mapped[int] = mapped_column(Integer, default=203)
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    def audit_key(self) -> str:
        return f"{self.site_code}/{self.name}"


class PrintJobStatus(enum.StrEnum):
    PENDING = "pending"
    PRINTED = "printed"
    FAILED = "failed"


class LabelPrintJob(Audited, Base):
    """The outbox of a label sent to a networked printer: recorded ``pending`` (its
    serials reserved) and committed before the TCP send, then ``printed`` (the
    ``label_print`` copies are recorded with it) or ``failed`` with the reason. A failed
    job's serials are never used again and never count as printed copies."""

    __tablename__ = "label_print_job"
    __table_args__ = (
        CheckConstraint(check_in("status", PrintJobStatus), name="status"),
        CheckConstraint("copies BETWEEN 1 AND 100", name="copies"),
        Index("ix_label_print_job_item_id_status", "item_id", "status"),
    )
    audit_entity = "label_print_job"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(String(16), unique=True)
    item_id: Mapped[str] = mapped_column(String(12), ForeignKey("item.item_id"))
    printer: Mapped[str] = mapped_column(String(60))
    address: Mapped[str] = mapped_column(String(262))  # host:port as sent to
    status: Mapped[str] = mapped_column(String(12))
    first_serial: Mapped[int] = mapped_column(Integer)
    copies: Mapped[int] = mapped_column(Integer)
    reprint: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failure: Mapped[str | None] = mapped_column(Text)

    def audit_key(self) -> str:
        return self.job_id
