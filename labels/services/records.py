"""The printed copies of an item as the item page and the API show them, the items
labels are printed for (through the label subjects seam), and the identifiers labels
give (label ids) or echo (a typed id)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from gmp_mes.models import User
from gmp_mes.registry import LabelSubject
from labels.models import LabelPrint, LabelVoid
from labels.services._common import canonical, subjects


@dataclass(frozen=True)
class LabelRecord:
    """One printed copy of an item's label as the item page and API show it (for a
    6-field label from before serials: one print of ``copies`` identical copies)."""

    label_id: str
    item_id: str
    serial: str | None
    format: str
    copies: int
    workstation: str | None
    reprint: bool
    reason: str | None
    status_banner: str | None
    key_id: str
    printed_by: str
    printed_at: datetime
    voided: bool
    void_reason: str | None
    voided_by: str | None
    voided_at: datetime | None
    replaces: str | None = None
    replaced_by: str | None = None


def new_label_id() -> str:
    """``LBL-`` + 10 characters of base32 (QR alphanumeric, 50 random bits)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "LBL-" + "".join(secrets.choice(alphabet) for _ in range(10))


def printable_id(value: str) -> str:
    text = (value or "").strip()[:40]
    return text if text.isprintable() else repr(text)


def labels_of_item(session: Session, item_id: str) -> list[LabelRecord]:
    """Every printed copy of the item, oldest first, with its void and replacement."""
    printer, voider = aliased(User), aliased(User)
    successor = aliased(LabelPrint)
    rows = session.execute(
        select(LabelPrint, LabelVoid, printer.username, voider.username, successor.label_id)
        .join(printer, printer.id == LabelPrint.printed_by)
        .outerjoin(LabelVoid, LabelVoid.label_id == LabelPrint.label_id)
        .outerjoin(voider, voider.id == LabelVoid.voided_by)
        .outerjoin(successor, successor.replaces == LabelPrint.label_id)
        .where(LabelPrint.item_id == canonical(item_id))
        .order_by(LabelPrint.printed_at, LabelPrint.id)
    ).all()
    return [
        LabelRecord(
            label_id=label.label_id,
            item_id=label.item_id,
            serial=str(label.serial) if label.serial is not None else None,
            format=label.format,
            copies=label.copies,
            workstation=label.workstation,
            reprint=label.reprint,
            reason=label.reason,
            status_banner=label.status_banner,
            key_id=label.key_id,
            printed_by=printed_by,
            printed_at=label.printed_at,
            voided=void is not None,
            void_reason=void.reason if void is not None else None,
            voided_by=voided_by,
            voided_at=void.voided_at if void is not None else None,
            replaces=label.replaces,
            replaced_by=replaced_by,
        )
        for label, void, printed_by, voided_by, replaced_by in rows
    ]


def wristband_of(session: Session, coi_or_item_id: str) -> LabelSubject:
    """The patient wristband named by a COI ID or its item ID (NotFound otherwise): the
    bedside replacement of a damaged wristband label."""
    return subjects().wristband(session, coi_or_item_id)


def items_of_batch(session: Session, batch_number: str) -> list[str]:
    """The item IDs of a batch, oldest first (a label sheet of the batch)."""
    return subjects().items_of_batch(session, batch_number)
