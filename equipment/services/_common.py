"""Helpers shared by the equipment services (private to the package)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from equipment.models import Equipment
from gmp_mes.db import lock_rows
from gmp_mes.errors import NotFound
from gmp_mes.models import User

# The subject id of an EQP label payload (labels.payload's subject alphabet).
EQUIPMENT_ID = re.compile(r"^[0-9A-Z][0-9A-Z.\-]{0,39}$")


def normal_id(text: str) -> str:
    """An equipment id as typed or scanned: trimmed, upper case (labels are upper case)."""
    return text.strip().upper() if isinstance(text, str) else ""


def get_equipment(session: Session, equipment_id: str, *,
                  for_update: bool = False) -> Equipment:
    """One piece of equipment (NotFound otherwise); ``for_update`` locks its row until
    commit (logbook entries and label prints of one piece of equipment are serialised)."""
    statement = select(Equipment).where(Equipment.equipment_id == normal_id(equipment_id))
    if for_update:
        statement = lock_rows(statement, Equipment)
    equipment = session.scalar(statement)
    if equipment is None:
        raise NotFound(f"no equipment {equipment_id!r}")
    return equipment


def user_row(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user
