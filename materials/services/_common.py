"""Private helpers of the materials service modules (not re-exported): exact quantities,
the lot lookup and the lot id pattern."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes.db import lock_rows
from gmp_mes.errors import NotFound, field_error
from materials.models import QUANTITY_PRECISION, QUANTITY_SCALE, MaterialLot

LOT_ID = re.compile(r"LOT-[0-9]{6,9}")
STEP = Decimal(1).scaleb(-QUANTITY_SCALE)  # 0.000001
MAX_QUANTITY = Decimal(10) ** (QUANTITY_PRECISION - QUANTITY_SCALE)


class QuantityInvalid(ValueError):
    """Not a positive quantity the lot columns hold exactly."""


def exact(value: object) -> Decimal:
    """``value`` (a Decimal, an int, a float as typed, or a decimal string) as the exact
    decimal the columns store, at their scale: the audit trail records what the row
    holds (``Decimal('0.100000')``). A float is read by its shortest spelling (0.1 is
    0.1, not 0.1000000000000000055). Raises QuantityInvalid for anything else: not
    positive, more than 6 decimals, 10^9 or more."""
    if isinstance(value, bool):
        raise QuantityInvalid("must be a number")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise QuantityInvalid("must be a number") from None
    if not number.is_finite():
        raise QuantityInvalid("must be a finite number")
    if number <= 0:
        raise QuantityInvalid("must be more than zero")
    if number >= MAX_QUANTITY:
        raise QuantityInvalid(f"must be less than {MAX_QUANTITY:,}")
    quantized = number.quantize(STEP)
    if quantized != number:
        raise QuantityInvalid(f"at most {QUANTITY_SCALE} decimals")
    return quantized


def stored(value: Decimal) -> Decimal:
    """A computed value (remaining after a use) at the columns' scale."""
    return value.quantize(STEP)


def show(value: Decimal) -> str:
    """A quantity as text: exact, without trailing zeros ("0.1", "250")."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def field_quantity(value: object, field: str = "quantity") -> Decimal:
    try:
        return exact(value)
    except QuantityInvalid as exc:
        raise field_error(field, str(exc)) from None


def normal_lot_id(text: str) -> str:
    return (text or "").strip().upper()


def get_lot(session: Session, lot_id: str, *, for_update: bool = False) -> MaterialLot:
    """The lot (404 ``not_found``), with its row locked until commit when ``for_update``."""
    statement = select(MaterialLot).where(MaterialLot.lot_id == normal_lot_id(lot_id))
    if for_update:
        statement = lock_rows(statement, MaterialLot)
    lot = session.scalar(statement)
    if lot is None:
        raise NotFound(f"no material lot {lot_id!r}")
    return lot
