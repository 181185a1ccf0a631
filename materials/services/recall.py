"""The recall (SPEC §11 where-used): forward traceability from a lot to the batches that
used it, their final-product bags with their status, and the patients (COIs) they reached,
administered ones first. EU ATMP Regulation 1394/2007 Art. 15.

One SQL statement: the lot's uses grouped by batch, outer-joined to identity's
final-product query (``identity.services.final_products``) as a subquery, so a batch
without bags (still in process) is listed too. materials never reads identity's tables
itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import lru_cache

from sqlalchemy import Select, String, bindparam, func, select
from sqlalchemy.orm import Session

import identity.services as identity
from materials.models import LotUse, MaterialLot
from materials.services._common import get_lot


@dataclass(frozen=True)
class RecalledItem:
    """A final-product bag made in a batch that used the lot."""

    item_id: str
    status: str
    coi_id: str
    site_code: str
    expires_at: datetime | None
    administered_at: datetime | None
    administered_site: str | None

    @property
    def administered(self) -> bool:
        return self.administered_at is not None


@dataclass
class RecalledBatch:
    """A batch that used the lot: how much, first and last use, its bags."""

    batch_number: str
    coi_id: str
    quantity: Decimal
    uses: int
    first_used_at: datetime
    last_used_at: datetime
    items: list[RecalledItem] = field(default_factory=list)

    @property
    def administered(self) -> bool:
        return any(item.administered for item in self.items)


@dataclass(frozen=True)
class WhereUsed:
    """The recall answer: the lot and its batches, those with an administered bag first."""

    lot: MaterialLot
    batches: list[RecalledBatch]

    @property
    def items(self) -> list[RecalledItem]:
        """Every bag, administered ones first."""
        bags = [item for batch in self.batches for item in batch.items]
        return sorted(bags, key=lambda i: not i.administered)

    @property
    def patients(self) -> list[tuple[str, bool]]:
        """(COI, any bag administered), administered first, each COI once."""
        seen: dict[str, bool] = {}
        for batch in self.batches:
            seen[batch.coi_id] = seen.get(batch.coi_id, False) or batch.administered
        return sorted(seen.items(), key=lambda p: (not p[1], p[0]))


@lru_cache(maxsize=1)
def where_used_statement() -> Select[tuple[object, ...]]:
    """The one statement of the recall, with the bound parameter ``lot_id`` (built once:
    the recall runs it for each lot; the benchmark times it against hand-written SQL)."""
    uses = (
        select(LotUse.batch_number, LotUse.coi_id,
               func.sum(LotUse.quantity).label("quantity"),
               func.count(LotUse.id).label("uses"),
               func.min(LotUse.used_at).label("first_used_at"),
               func.max(LotUse.used_at).label("last_used_at"))
        .where(LotUse.lot_id == bindparam("lot_id", type_=String))
        .group_by(LotUse.batch_number, LotUse.coi_id)
        .subquery("uses")
    )
    bags = identity.final_products().subquery("bags")
    return (
        select(uses.c.batch_number, uses.c.coi_id, uses.c.quantity, uses.c.uses,
               uses.c.first_used_at, uses.c.last_used_at, bags.c.item_id, bags.c.status,
               bags.c.coi_id.label("item_coi_id"), bags.c.site_code, bags.c.expires_at,
               bags.c.administered_at, bags.c.administered_site)
        .select_from(uses.outerjoin(bags, bags.c.batch_number == uses.c.batch_number))
        .order_by(bags.c.administered_at.is_(None), bags.c.administered_at,
                  uses.c.batch_number, bags.c.item_id)
    )


def where_used(session: Session, lot_id: str) -> WhereUsed:
    """Every batch that used the lot, its bags (status, administered) and the COIs, the
    batches with an administered bag first (404 for an unknown lot)."""
    lot = get_lot(session, lot_id)
    batches: dict[str, RecalledBatch] = {}
    for row in session.execute(where_used_statement(), {"lot_id": lot.lot_id}):
        batch = batches.get(row.batch_number)
        if batch is None:
            batch = batches[row.batch_number] = RecalledBatch(
                batch_number=row.batch_number, coi_id=row.coi_id,
                quantity=Decimal(row.quantity), uses=row.uses,
                first_used_at=row.first_used_at, last_used_at=row.last_used_at)
        if row.item_id is not None:
            batch.items.append(RecalledItem(
                item_id=row.item_id, status=row.status, coi_id=row.item_coi_id,
                site_code=row.site_code, expires_at=row.expires_at,
                administered_at=row.administered_at, administered_site=row.administered_site))
    return WhereUsed(lot=lot, batches=list(batches.values()))
