"""Storage positions (SPEC §14): units ``SITE/FREEZER/RACK/BOX`` with numbered positions,
one item per position. Final products and retention samples sit in liquid nitrogen for
months: where each is must be exact (EU GMP Part IV 6.5, traceability).

identity's custody ``move`` and ``receive`` place an item (``position``
``<code>:<n>``), and every custody action that takes it away frees it: this module is the
``registry.storage_positions`` provider (:data:`POSITIONS`). The unit's row is locked
before a position is read, and partial unique indexes (one open placement per position
and per item) back it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes.accounts import Person
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.db import lock_rows
from gmp_mes.errors import AlreadyExists, NotFound, conflict, field_error
from gmp_mes.models import Site
from logistics.models import StoragePlacement, StorageUnit
from logistics.services.shipments import _condition

# SITE/FREEZER/RACK/BOX: four parts in capitals, digits and hyphens (labels' alphabet).
CODE = re.compile(r"[A-Z0-9][A-Z0-9-]{0,19}(/[A-Z0-9][A-Z0-9-]{0,19}){3}")
MAX_POSITIONS = 1000


def _code(text: str, field_name: str = "code") -> str:
    code = (text or "").strip().upper()
    if not CODE.fullmatch(code):
        raise field_error(field_name, "a storage code is SITE/FREEZER/RACK/BOX (letters, "
                                      "digits, hyphens), e.g. CLEAN1/LN2-1/R3/B2")
    return code


def create_unit(session: Session, *, code: str, positions: int, min_c: float, max_c: float,
                user: Person) -> StorageUnit:
    """A storage unit (admin): its site is the code's first part."""
    code = _code(code)
    site = code.split("/", 1)[0]
    if session.scalar(select(Site.code).where(Site.code == site)) is None:
        raise field_error("code", f"the code starts with a site; there is no site {site!r}")
    if not 1 <= positions <= MAX_POSITIONS:
        raise field_error("positions", f"between 1 and {MAX_POSITIONS}")
    _condition(min_c, max_c)
    if session.get(StorageUnit, code) is not None:
        raise AlreadyExists(f"storage unit {code} exists already")
    unit = StorageUnit(code=code, site_code=site, positions=positions, min_c=float(min_c),
                       max_c=float(max_c), created_by=user.id, created_at=utcnow())
    session.add(unit)
    session.flush()
    return unit


def get_unit(session: Session, code: str, *, for_update: bool = False) -> StorageUnit:
    key = (code or "").strip().upper()
    statement = select(StorageUnit).where(StorageUnit.code == key)
    unit = session.scalar(lock_rows(statement, StorageUnit) if for_update else statement)
    if unit is None:
        raise NotFound(f"no storage unit {key[:80]!r}")
    return unit


def list_units(session: Session, site: str | None = None) -> list[StorageUnit]:
    statement = select(StorageUnit).order_by(StorageUnit.code)
    if site:
        statement = statement.where(StorageUnit.site_code == site)
    return list(session.scalars(statement))


@dataclass(frozen=True)
class Occupancy:
    unit: StorageUnit
    placed: dict[int, StoragePlacement]  # position -> the item there now

    @property
    def free(self) -> int:
        return self.unit.positions - len(self.placed)


def occupancy(session: Session, code: str) -> Occupancy:
    unit = get_unit(session, code)
    rows = session.scalars(select(StoragePlacement).where(
        StoragePlacement.unit_code == unit.code, StoragePlacement.removed_at.is_(None)))
    return Occupancy(unit, {p.position: p for p in rows})


def position_of(session: Session, item_id: str) -> StoragePlacement | None:
    """Where the item is stored now (None: in no position)."""
    return session.scalar(select(StoragePlacement).where(
        StoragePlacement.item_id == item_id, StoragePlacement.removed_at.is_(None)))


def _user_id(session: Session) -> int | None:
    actor = session.info.get("actor")
    return actor.user_id if isinstance(actor, Actor) else None


class _Positions:
    """``registry.storage_positions``: what identity's custody asks."""

    def place(self, session: Session, item_id: str, position: str, *, site_code: str) -> str:
        code, _, number = (position or "").strip().upper().rpartition(":")
        if not code or not number.isdigit():
            raise field_error("position", "a position is <SITE/FREEZER/RACK/BOX>:<number>, "
                                          "e.g. CLEAN1/LN2-1/R3/B2:17")
        unit = get_unit(session, _code(code, "position"), for_update=True)
        n = int(number)
        if not 1 <= n <= unit.positions:
            raise field_error("position", f"{unit.code} has positions 1 to {unit.positions}")
        if unit.site_code != site_code:
            raise conflict("position_other_site", f"{unit.code} is at {unit.site_code}; the "
                                                  f"item is at {site_code}")
        there = session.scalar(select(StoragePlacement).where(
            StoragePlacement.unit_code == unit.code, StoragePlacement.position == n,
            StoragePlacement.removed_at.is_(None)))
        if there is not None and there.item_id != item_id:
            raise conflict("position_occupied", f"{unit.code}:{n} holds item {there.item_id}: "
                                                "one item per position",
                           extra={"item_id": there.item_id})
        if there is None:
            self.vacate(session, item_id)
            session.add(StoragePlacement(unit_code=unit.code, position=n, item_id=item_id,
                                         placed_by=_user_id(session), placed_at=utcnow()))
            session.flush()
        return f"{unit.code}:{n}"

    def vacate(self, session: Session, item_id: str) -> str | None:
        placed = position_of(session, item_id)
        if placed is None:
            return None
        placed.removed_at, placed.removed_by = utcnow(), _user_id(session)
        session.flush()
        return placed.ref


POSITIONS = _Positions()
