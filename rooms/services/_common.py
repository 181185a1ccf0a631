"""Helpers shared by the rooms services (private to the package)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes.db import lock_rows
from gmp_mes.errors import NotFound
from gmp_mes.models import User
from rooms.models import Room

# A room code as written on its door: upper case letters, digits, '.' and '-'.
ROOM_CODE = re.compile(r"^[0-9A-Z][0-9A-Z.\-]{0,39}$")


def normal_code(text: object) -> str:
    """A room code as typed: trimmed, upper case."""
    return text.strip().upper() if isinstance(text, str) else ""


def get_room(session: Session, code: str, *, for_update: bool = False) -> Room:
    """One room (NotFound otherwise); ``for_update`` locks its row until commit (a step
    entering it, a clearance of it: one at a time per room)."""
    statement = select(Room).where(Room.code == normal_code(code))
    if for_update:
        statement = lock_rows(statement, Room)
    room = session.scalar(statement)
    if room is None:
        raise NotFound(f"no room {code!r}")
    return room


def user_row(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user
