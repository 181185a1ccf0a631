"""Finding an item or a patient by its key (every module needs them)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes.db import lock_rows
from gmp_mes.errors import NotFound
from identity.models import Item, Patient


def printable(text: str, limit: int = 300) -> str:
    """Scanned text as stored: control characters escaped (PostgreSQL refuses NUL in
    text), cut to ``limit`` characters. What was scanned stays visible in the record."""
    cut = text[:limit]
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in cut)


def get_item(session: Session, item_id: str, *, for_update: bool = False) -> Item:
    key = (item_id or "").strip().upper()
    if not key.isprintable():
        raise NotFound(f"no item {printable(key, 40)!r}")
    if for_update:
        item = session.scalar(lock_rows(select(Item).where(Item.item_id == key), Item))
    else:
        item = session.get(Item, key)
    if item is None:
        raise NotFound(f"no item {item_id!r}")
    return item


def get_patient(session: Session, coi_id: str) -> Patient:
    key = (coi_id or "").strip().upper()
    if not key.isprintable():
        raise NotFound(f"no patient with COI ID {printable(key, 20)!r}")
    patient = session.scalar(select(Patient).where(Patient.coi_id == key))
    if patient is None:
        raise NotFound(f"no patient with COI ID {coi_id!r}")
    return patient
