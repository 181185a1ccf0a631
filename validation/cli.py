"""``gmp-mes validate iq|report``, ``gmp-mes archive batch|patient|verify``,
``gmp-mes backup`` and ``gmp-mes restore`` (SPEC §17)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy.exc import DBAPIError

from gmp_mes.cli import (
    cli_actor,
    database,
    handles_errors,
    maintenance_database,
    unit_of_work,
)
from gmp_mes.errors import DomainError
from labels.services import SigningKeyUnavailable


def _settings() -> Any:
    return current_app.config["GMP_SETTINGS"]


@contextmanager
def _bar(label: str, length: int | None = None) -> Iterator[Callable[..., None]]:
    """A progress bar on standard error (standard output stays for the results)."""
    with click.progressbar(length=length or 1, label=label, file=sys.stderr,
                           show_eta=False) as bar:
        yield bar.update


@contextmanager
def _percent_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A bar for work that reports (done, total), such as SQLite's backup pages."""
    with click.progressbar(length=100, label=label, file=sys.stderr, show_eta=False) as bar:
        shown = [0]

        def step(done: int, total: int) -> None:
            percent = 100 * done // max(total, 1)
            bar.update(percent - shown[0])
            shown[0] = percent

        yield step


# --- validate ---------------------------------------------------------------------------

@click.group("validate")
def validate_group() -> None:
    """Installation qualification and the traceability matrix (validation pack)."""


@validate_group.command("iq")
@click.option("--json", "as_json", is_flag=True, help="print the signed record as JSON")
@with_appcontext
@handles_errors
def validate_iq(as_json: bool) -> None:
    """Installation qualification: each check pass/fail; exit 1 on any failure."""
    from validation import iq

    settings = _settings()
    checks = iq.run_checks(settings, database().engine)
    record = iq.build_record(checks, settings, cli_actor().username)
    path, signed = iq.save_record(record, settings)
    audited = _audit_iq(checks, path, record)
    if as_json:
        click.echo(json.dumps(signed, indent=2, ensure_ascii=False))
    else:
        for check in checks:
            click.echo(f"{'PASS' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
        signature = signed.get("signature")
        click.echo(f"record: {path}" + (f" (signed, key id {signature['key_id']})"
                                        if signature else " (UNSIGNED: no usable key)"))
    if not audited:
        click.echo("audit trail: the IQ run was not recorded (the schema check failed)",
                   err=True)
    if not record["ok"]:
        failed = [c.name for c in checks if not c.ok]
        click.echo(f"installation qualification FAILED: {', '.join(failed)}", err=True)
        sys.exit(1)
    if not as_json:
        click.echo("installation qualification passed")


def _audit_iq(checks: list[Any], path: Path, record: dict[str, Any]) -> bool:
    """Record the run in the audit trail when the schema is there to take it."""
    from validation import iq

    if not next(c for c in checks if c.name == "schema at head").ok:
        return False
    with unit_of_work() as session:
        iq.audit_run(session, path, record)
    return True


@validate_group.command("report")
@click.option("--results", "results_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JUnit XML of the test run (pytest --junitxml)")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="folder for the report")
def validate_report(results_path: Path, out_dir: Path) -> None:
    """Traceability matrix from a test run: HTML, PDF and JSON in OUT."""
    from validation import report
    from validation.requirements import load_catalogue

    try:
        catalogue = load_catalogue()
        with _bar("reading results", report.count_cases(results_path)) as step:
            results = report.parse_results(results_path, progress=step)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    matrix = report.build_matrix(catalogue, results, report.report_meta(results_path))
    with _bar("writing report", len(report.OUTPUTS)) as step:
        written = report.write_report(matrix, out_dir, progress=step)
    for path in written:
        click.echo(f"wrote {path}")
    totals = matrix.totals()
    click.echo(f"{len(results)} tests ({', '.join(f'{v} {k}' for k, v in totals.items())}); "
               f"{len(matrix.rows)} clauses, {len(matrix.gaps)} without evidence")
    for test, marker in matrix.unknown:
        click.echo(f"unknown clause {marker!r} on {test.id}", err=True)


# --- archive ----------------------------------------------------------------------------

@click.group("archive")
def archive_group() -> None:
    """Signed, self-contained archives of GMP records (30-year retention)."""


def _write_archive(kind: str, subject: str, out: Path) -> None:
    from gmp_mes import audit
    from validation import archive, signing

    with maintenance_database() as db:  # a large patient's archive outlasts any request
        # A read session (no writer lock on SQLite): one snapshot for record, events and chain.
        session = db.session(write=False)
        session.info["actor"] = cli_actor()
        try:
            if db.dialect == "postgresql":
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            involved = (archive.batch_contents(session, subject) if kind == "batch"
                        else archive.patient_contents(session, subject))
            head = audit.head(session.connection())
            with _bar(f"archiving {kind} {involved.subject}", head.seq if head else 1) as step:
                data = archive.build_archive(
                    session, involved, created_by=cli_actor().username,
                    public_keys=signing.installation_public_keys(),
                    private_key=signing.installation_key(), progress=step)
        except DomainError as exc:
            raise click.ClickException(exc.detail) from exc
        except archive.ArchiveError as exc:
            raise click.ClickException(str(exc)) from exc
        except DBAPIError as exc:
            raise click.ClickException(f"database error: {exc.orig}") from exc
        finally:
            session.rollback()  # read only: nothing to commit
            session.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    verified = archive.verify_archive(data)
    click.echo(f"{out}: archive of {kind} {involved.subject}, {verified.events} audit events, "
               f"{verified.files} files, anchor {verified.anchor} ({len(data)} bytes)")


@archive_group.command("batch")
@click.argument("number")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def archive_batch(number: str, out: Path) -> None:
    """Archive the executed batch record NUMBER with its audit events."""
    _write_archive("batch", number, out)


@archive_group.command("patient")
@click.argument("coi")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def archive_patient(coi: str, out: Path) -> None:
    """Archive everything of the patient with COI ID COI: batches, items, events."""
    _write_archive("patient", coi, out)


@archive_group.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--public-key", "public_key", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM file of trusted public keys (`gmp-mes labels public-key --all`)")
def archive_verify(file: Path, public_key: Path | None) -> None:
    """Check an archive offline (no database); exit 1 on any change."""
    from validation import archive

    try:
        trusted = archive.read_trusted_keys(public_key) if public_key else None
        result = archive.verify_archive(file.read_bytes(), trusted)
    except archive.ArchiveError as exc:
        click.echo(f"archive NOT intact: {exc}", err=True)
        sys.exit(1)
    for line in result.lines():
        click.echo(line)


# --- backup and restore -----------------------------------------------------------------

@click.command("backup")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
@handles_errors
def backup_command(out: Path) -> None:
    """Consistent online backup of the database (the application may keep writing)."""
    from validation import backup

    with _percent_bar("backup") as step:
        try:
            description = backup.backup(database(), out, actor=cli_actor(), progress=step)
        except backup.BackupError as exc:
            raise click.ClickException(str(exc)) from exc
    keys = ", ".join(description["label_key_ids"]) or "none"
    click.echo(f"{out}: {description['dialect']} backup, {description['audit_events']} audit "
               f"events, head {description['audit_head']}; labels signed by key(s) {keys}")
    click.echo("keep the instance folder's signing_key.pem and signing_key.retired/ with "
               "this backup: labels verify only with those keys", err=True)


@click.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_appcontext
@handles_errors
def restore_command(file: Path) -> None:
    """Restore a backup into the configured, empty database, then verify its audit trail."""
    from validation import backup, signing

    try:
        here = {signing.key_id(k) for k in signing.installation_public_keys()}
    except SigningKeyUnavailable:
        here = set()
    with _percent_bar("restore") as step:
        try:
            restored = backup.restore(database(), file, key_ids_here=here,
                                      actor=cli_actor(), progress=step)
        except backup.BackupError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"restored {file}: audit trail intact, {restored.events} events, head "
               f"{restored.head}")
    if restored.missing_keys:
        click.echo(f"labels were signed by key(s) {', '.join(restored.missing_keys)}, not "
                   "present here: restore signing_key.pem and signing_key.retired/ into the "
                   "instance folder before `gmp-mes init`", err=True)


def register(app: Any) -> None:
    for command in (validate_group, archive_group, backup_command, restore_command):
        app.cli.add_command(command)
