"""``gmp-mes equipment list``: the registry with each status as the logbook computes it."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from equipment import services
from gmp_mes.cli import unit_of_work
from gmp_mes.localtime import in_utc


@click.group("equipment")
def equipment_group() -> None:
    """Equipment: registry, logbook status (SPEC §11)."""


@equipment_group.command("list")
@click.option("--site", default=None, help="only the equipment of this site")
@with_appcontext
def equipment_list(site: str | None) -> None:
    """Every piece of equipment with its status and calibration validity."""
    with unit_of_work() as session:
        rows = services.list_equipment(session, site_code=site, limit=100_000)
        if not rows:
            click.echo("no equipment registered")
        for view in rows:
            until = (in_utc(view.calibration_valid_until)
                     if view.calibration_valid_until else "-")
            reasons = "; ".join(r["message"] for r in view.reasons)
            click.echo(f"{view.equipment_id}  {view.type}  {view.site_code}  {view.status}  "
                       f"calibration valid until {until}  {view.name}"
                       + (f"  ({reasons})" if reasons else ""))
