"""``gmp-mes agreements ...``: the outcome agreements of ``config/agreements``."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from gmp_mes.cli import handles_errors
from outcomes import services


@click.group("agreements")
def agreements_group() -> None:
    """Outcome agreements (milestones a payer pays on)."""


@agreements_group.command("check")
@with_appcontext
@handles_errors
def agreements_check() -> None:
    """Load and check every agreement file: one line each, or one line naming the bad
    file and field and exit 1."""
    found = services.agreements()
    if not found:
        click.echo(f"no outcome agreements in {services.agreement_dir()}")
    for agreement in found.values():
        click.echo(f"{agreement.code} v{agreement.version}  {agreement.name}  "
                   f"({len(agreement.milestones)} milestones, process {agreement.process})")
