"""``gmp-mes export batch ...`` (SPEC §8)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask.cli import with_appcontext

from gmp_mes.cli import unit_of_work


@click.group("export")
def export_group() -> None:
    """Exports of GMP records."""


@export_group.command("batch")
@click.argument("batch_number")
@click.option("--format", "fmt", type=click.Choice(["pdf", "json"]), default="pdf",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="file to write (default: standard output)")
@with_appcontext
def export_batch(batch_number: str, fmt: str, output: Path | None) -> None:
    """The executed batch record of BATCH_NUMBER as PDF or JSON."""
    from batches import export

    with unit_of_work() as session:
        data, _ = export.export_batch(session, batch_number, fmt)
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        output.write_bytes(data)
        click.echo(f"{output}: executed batch record {batch_number} ({len(data)} bytes)",
                   err=True)
