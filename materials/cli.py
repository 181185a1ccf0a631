"""``gmp-mes lots ...``: the recall at the console (SPEC §11 where-used)."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from gmp_mes.cli import unit_of_work
from gmp_mes.errors import NotFound
from gmp_mes.localtime import in_utc
from materials import services


@click.group("lots")
def lots_group() -> None:
    """Material lots: where a lot was used (the recall)."""


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]


@lots_group.command("where-used")
@click.argument("lot_id")
@with_appcontext
def lots_where_used(lot_id: str) -> None:
    """Every batch that used LOT_ID, its final-product bags and their patients,
    administered ones first. An unknown lot: one line, exit 1."""
    with unit_of_work() as session:
        try:
            answer = services.where_used(session, lot_id)
        except NotFound as exc:
            raise click.ClickException(exc.detail) from None
        lot = answer.lot
        click.echo(f"lot {lot.lot_id}  {lot.material_code} ({lot.material.name})  supplier "
                   f"{lot.supplier} lot {lot.supplier_lot}  {lot.status}  expires "
                   f"{in_utc(lot.expires_at)}  {services.show(lot.remaining)} of "
                   f"{services.show(lot.quantity)} {lot.material.unit} left")
        if not answer.batches:
            click.echo("not used by any batch")
            return
        rows: list[tuple[str, ...]] = [("BATCH", "COI", "USED", "BAG", "STATUS",
                                        "ADMINISTERED")]
        for batch in answer.batches:
            used = f"{services.show(batch.quantity)} {lot.material.unit}"
            bags: list[services.RecalledItem | None] = list(batch.items) or [None]
            for item in bags:
                rows.append((batch.batch_number, batch.coi_id, used,
                             item.item_id if item else "-", item.status if item else "-",
                             in_utc(item.administered_at)
                             if item and item.administered_at else "-"))
        for line in _table(rows):
            click.echo(line)
        patients = answer.patients
        given = [coi for coi, administered in patients if administered]
        click.echo(f"{len(answer.batches)} batch(es), {len(patients)} patient(s), "
                   f"{len(given)} administered{': ' + ', '.join(given) if given else ''}")
