"""The items side of a recall (SPEC §11 where-used): a query other domains join to.

materials answers "which bags and patients did this lot reach" in one SQL statement by
joining its lot uses to this ``Select`` as a subquery: it reads identity's items through
identity's services, never its tables (DEVELOPING.md, "Layout, layers and seams").
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Select, select

from identity.models import Administration, Item, ItemKind

# item_id, batch_number, status, coi_id, site_code, expires_at, administered_at,
# administered_site: the last two come through an outer join, so they may be NULL.
FinalProducts = Select[str, str | None, str, str, str, datetime | None, datetime | None,
                       str | None]


def final_products() -> FinalProducts:
    """Every final-product bag: ``item_id``, ``batch_number``, ``status``, ``coi_id`` (the
    patient it is for, autologous), ``site_code`` (where it is), ``expires_at``,
    ``administered_at`` and ``administered_site`` (None unless infused). No order, no
    filter beyond the kind: the caller joins on ``batch_number`` and orders.

    The administration columns are correlated scalar subqueries (one unique-index probe
    per bag), not a join: a subquery that is no join can be merged into the caller's
    outer join by SQLite's planner, which then reads the bags through the batch number
    index instead of materialising every bag first."""
    given = Administration.__table__
    administered_at = (select(given.c.administered_at).where(given.c.item_id == Item.item_id)
                       .scalar_subquery())
    administered_site = (select(given.c.site_code).where(given.c.item_id == Item.item_id)
                         .scalar_subquery())
    return cast(FinalProducts, (
        select(Item.item_id, Item.batch_number, Item.status, Item.coi_id, Item.site_code,
               Item.expires_at, administered_at.label("administered_at"),
               administered_site.label("administered_site"))
        .where(Item.kind == ItemKind.FINAL_PRODUCT.value)
    ))
