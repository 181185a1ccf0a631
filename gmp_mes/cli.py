"""The ``gmp-mes`` command line (also ``flask --app gmp_mes``).

Each command is one unit of work: it commits at the end or rolls back. Errors
are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from functools import wraps
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from gmp_mes import accounts, audit, migrate, registry
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.db import Database
from gmp_mes.errors import DomainError
from gmp_mes.models import DecimalSeparator, Role, SiteKind
from gmp_mes.settings import SettingsError


def database() -> Database:
    return current_app.extensions["gmp_mes.db"]


@contextmanager
def maintenance_database() -> Iterator[Database]:
    """The database for a long maintenance command started on purpose (audit verify, an
    archive): without the statement and network timeouts that bound web requests, since
    verifying a 30-year trail takes longer than any request may. SQLite has none."""
    db = database()
    if not db.url.startswith("postgresql"):
        yield db
        return
    unbounded = Database(db.url, pool_size=2)
    unbounded.session_info.update(db.session_info)
    try:
        yield unbounded
    finally:
        unbounded.dispose()


def cli_actor() -> Actor:
    """CLI actions are attributed to the operating-system account that ran them."""
    return Actor.system(f"cli:{getpass.getuser()}")


@contextmanager
def unit_of_work(actor: Actor | None = None) -> Iterator[Session]:
    """A committed transaction, with domain and database errors turned into one line."""
    try:
        with database().transaction(actor=actor or cli_actor()) as session:
            yield session
    except DomainError as exc:
        try:
            _follow_up(exc)
        except DomainError as refused:  # the follow-up refused too (clock went backwards)
            exc = refused
        fields = "; ".join(f"{k}: {', '.join(v)}" for k, v in (exc.errors or {}).items())
        raise click.ClickException(f"{exc.detail}{' (' + fields + ')' if fields else ''}") from exc
    except DBAPIError as exc:
        raise click.ClickException(_database_message(exc)) from exc


def _database_message(exc: DBAPIError) -> str:
    from gmp_mes.db import is_retryable

    if is_retryable(exc):
        return ("concurrent update: other changes to the same records were made at the same "
                f"moment and this one was undone; nothing was saved: run it again ({exc.orig})")
    return f"database error: {exc.orig}"


def _follow_up(error: DomainError) -> None:
    if error.follow_up is None:
        return
    try:
        with database().transaction(actor=Actor.system("security")) as s:
            error.follow_up(s)
    except DomainError as refused:
        _follow_up(refused)
        raise


def read_password(from_stdin: bool, prompt: str = "Password", confirm: bool = False) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise click.ClickException("no password on standard input")
        return line.rstrip("\r\n")
    return click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)


def handles_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (DomainError, SettingsError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc
        except DBAPIError as exc:
            raise click.ClickException(_database_message(exc)) from exc

    return wrapper


@click.command("init")
@with_appcontext
@handles_errors
def init_command() -> None:
    """Create or upgrade the schema, load definitions, create the signing key."""
    migrate.upgrade(database().engine)
    click.echo("schema: up to date")
    for hook in registry.of(current_app).init_hooks:
        with unit_of_work() as session:
            for line in hook(current_app, session):
                click.echo(line)


@click.group("sites")
def sites_group() -> None:
    """Collection, manufacturing and treatment sites."""


@sites_group.command("create")
@click.argument("code")
@click.option("--kind", required=True, type=click.Choice([k.value for k in SiteKind]))
@click.option("--name", required=True)
@click.option("--timezone", default=None, help="IANA zone for pages and labels")
@click.option("--decimal-separator", "decimal_separator", default=".", show_default=True,
              type=click.Choice([s.value for s in DecimalSeparator]),
              help="how the site's people write decimals in forms (a point is always taken)")
@with_appcontext
def sites_create(code: str, kind: str, name: str, timezone: str | None,
                 decimal_separator: str) -> None:
    """Create a site."""
    zone = timezone or current_app.config["GMP_SETTINGS"].timezone
    with unit_of_work() as session:
        site = accounts.create_site(session, code, kind=kind, name=name, timezone=zone,
                                    decimal_separator=decimal_separator)
        click.echo(f"site {site.code} created ({site.kind})")


@click.group("users")
def users_group() -> None:
    """People and their roles."""


@users_group.command("create")
@click.argument("username")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice([r.value for r in Role]),
    help="repeat for several roles",
)
@click.option("--site", required=True, help="site code the user belongs to")
@click.option("--full-name", default=None, help="printed name on signatures")
@click.option("--email", default=None, help="address for alert e-mails (optional)")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@click.option(
    "--must-change",
    is_flag=True,
    help="the password is one-time: it must be changed before it gives a token or session",
)
@with_appcontext
def users_create(
    username: str,
    roles: tuple[str, ...],
    site: str,
    full_name: str | None,
    email: str | None,
    password_stdin: bool,
    must_change: bool,
) -> None:
    """Create a user (the name can never be reused). The password is the person's own,
    typed at the console, unless --must-change makes it one-time (21 CFR 11.300(b))."""
    password = read_password(password_stdin, confirm=True)
    with unit_of_work() as session:
        user = accounts.create_user(
            session,
            username,
            password=password,
            roles=roles,
            site_code=site,
            full_name=full_name,
            email=email,
            must_change=must_change,
        )
        click.echo(f"user {user.username} created ({', '.join(sorted(user.roles))} at {site})"
                   + (" with a one-time password" if must_change else ""))


@users_group.command("password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True,
              help="read the current and then the new password, one a line, from stdin")
@with_appcontext
def users_password(username: str, password_stdin: bool) -> None:
    """Change your own password (the current one, a one-time one too, is required)."""
    current = read_password(password_stdin, "Current password")
    new = read_password(password_stdin, "New password", confirm=True)
    with unit_of_work() as session:
        accounts.change_password(session, username, current, new)
        click.echo(f"password of {username} changed; every session and token of it ended")


@users_group.command("reset-password")
@click.argument("username")
@with_appcontext
def users_reset_password(username: str) -> None:
    """Give the user a one-time password (printed once); it must be changed at next login."""
    with unit_of_work() as session:
        user, password = accounts.reset_password(session, username)
        click.echo(f"one-time password of {user.username}: {password}")


@users_group.command("unlock")
@click.argument("username")
@with_appcontext
def users_unlock(username: str) -> None:
    """Unlock an account locked after failed logins."""
    with unit_of_work() as session:
        accounts.unlock_user(session, username)
        click.echo(f"user {username} unlocked")


@users_group.command("deactivate")
@click.argument("username")
@with_appcontext
def users_deactivate(username: str) -> None:
    """Deactivate a user; the name stays reserved."""
    with unit_of_work() as session:
        accounts.deactivate_user(session, username)
        click.echo(f"user {username} deactivated")


@click.group("audit")
def audit_group() -> None:
    """The audit trail."""


def _anchor(_ctx: Any, _param: Any, values: tuple[str, ...]) -> list[audit.Anchor]:
    try:
        return [audit.Anchor.parse(value) for value in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@audit_group.command("verify")
@click.option("--anchor", "anchors", multiple=True, callback=_anchor, metavar="SEQ:HASH",
              help="a head recorded earlier with `audit head`: also prove nothing up to it "
                   "was removed (repeatable)")
@click.option("--since-checkpoint", is_flag=True,
              help="verify only the events after the last signed checkpoint (its signature "
                   "and its place on the chain are checked); the records changed since "
                   "are reconciled")
@with_appcontext
@handles_errors
def audit_verify(anchors: list[audit.Anchor], since_checkpoint: bool) -> None:
    """Recompute the hash chain, check the signed checkpoints, the time order and every
    audited record against its last audited values; exit 1 naming each problem."""
    from gmp_mes import checkpoints, trail

    try:
        keys = checkpoints.public_keys(current_app)
    except Exception as exc:  # a missing or unreadable key file: one line, never a traceback
        raise click.ClickException(f"installation key: {exc}") from exc
    minutes = current_app.config["GMP_SETTINGS"].checkpoint_minutes
    with maintenance_database() as db:
        with db.engine.connect() as connection:
            total = 0 if since_checkpoint else audit.count_events(connection)
        shown = (click.progressbar(length=total, label="verifying", file=sys.stderr)
                 if total >= 10_000 else nullcontext())
        try:
            with shown as bar:
                report = trail.verify_trail(
                    db, keys, anchors=anchors, since_checkpoint=since_checkpoint,
                    checkpoint_interval=timedelta(minutes=minutes),
                    progress=bar.update if bar is not None else None,
                )
        except trail.NoCheckpoint as exc:
            raise click.ClickException(str(exc)) from exc
    for line in report.problems + report.warnings:
        click.echo(line, err=True)
    if not report.ok:
        click.echo(f"audit verify FAILED: {len(report.problems)} problem(s)", err=True)
        sys.exit(1)
    for line in report.summary:
        click.echo(line)


@audit_group.command("checkpoint")
@with_appcontext
@handles_errors
def audit_checkpoint() -> None:
    """Sign the chain's head now with the installation key (the scheduler does it
    every `checkpoint_minutes`)."""
    from gmp_mes import checkpoints

    key = checkpoints.installation_key(current_app)
    if key is None:
        raise click.ClickException("no installation key is registered")
    with unit_of_work() as session:
        checkpoint = checkpoints.write_checkpoint(session, key)
    if checkpoint is None:
        click.echo("no new events since the last checkpoint (or the trail is empty)")
        return
    click.echo(str(checkpoint))


@audit_group.command("head")
@with_appcontext
@handles_errors
def audit_head() -> None:
    """Print the chain's head as an anchor to keep outside the system."""
    with database().engine.connect() as connection:
        anchor = audit.head(connection)
    if anchor is None:
        click.echo("the audit trail is empty")
        return
    click.echo(str(anchor))
    click.echo(f"recorded at {audit.format_time(utcnow())}: keep this line outside the system; "
               f"`gmp-mes audit verify --anchor {anchor}` later proves that no event up to "
               f"{anchor.seq} was removed or changed", err=True)


@click.group("clock")
def clock_group() -> None:
    """Jobs held after a forward clock jump (see gmp_mes.clockwatch)."""


@clock_group.command("status")
@with_appcontext
@handles_errors
def clock_status() -> None:
    """Show held jobs and the system clock."""
    from gmp_mes import clockwatch

    click.echo(f"system clock: {audit.format_time(utcnow())}")
    with database().session(write=False) as session:
        held = clockwatch.holds(session)
    for hold in held:
        click.echo(hold.line())
    if not held:
        click.echo("no job is held")


@clock_group.command("confirm")
@click.argument("name", default="expiry_sweep")
@click.option("--reason", required=True, help="why the time is right (recorded)")
@with_appcontext
def clock_confirm(name: str, reason: str) -> None:
    """Confirm the clock after a forward jump: the held job acts again from its next run."""
    from gmp_mes import clockwatch

    with unit_of_work() as session:
        since = clockwatch.confirm(session, name, reason)
    click.echo(f"{name}: clock confirmed at {audit.format_time(utcnow())} (held since "
               f"{audit.format_time(since)}); the next run acts again")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, type=int, show_default=True)
@click.option("--threads", default=None, type=int, help="request threads (setting web_threads)")
@with_appcontext
def serve_command(host: str, port: int, threads: int | None) -> None:
    """Serve the web application with the scheduler (single node).

    A production WSGI server (waitress: threads in this one process, so the scheduler
    runs beside them exactly once), not Werkzeug's development server. For several
    nodes, run gunicorn (config/gunicorn.conf.py) and `gmp-mes scheduler` instead.
    """
    from waitress import serve

    from gmp_mes.scheduler import SchedulerHost

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    settings = app.config["GMP_SETTINGS"]
    host_ = SchedulerHost(app)
    host_.start_background()
    click.echo(f"gmp-mes serving on http://{host}:{port}")
    try:
        serve(
            app,
            host=host,
            port=port,
            threads=threads or settings.web_threads,
            ident="gmp-mes",
            # Behind a reverse proxy, ProxyFix (setting trusted_proxies) reads X-Forwarded-*.
            clear_untrusted_proxy_headers=False,
            channel_timeout=120,
            max_request_body_size=app.config["MAX_CONTENT_LENGTH"],
        )
    finally:
        host_.stop()


def register(app: Flask) -> None:
    for command in (
        init_command,
        sites_group,
        users_group,
        audit_group,
        clock_group,
        serve_command,
        scheduler_command,
        sweep_command,
    ):
        app.cli.add_command(command)


@click.command("scheduler")
@with_appcontext
def scheduler_command() -> None:
    """Run the scheduler alone (one active across all nodes)."""
    import signal
    import threading

    from gmp_mes.scheduler import SchedulerHost

    host = SchedulerHost(current_app._get_current_object())  # type: ignore[attr-defined]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo(f"scheduler started (pid {__import__('os').getpid()}, every {host.interval}s)")
    try:
        host.run_forever(stop)
    except KeyboardInterrupt:
        pass
    finally:
        host.stop()


@click.command("sweep")
@with_appcontext
@handles_errors
def sweep_command() -> None:
    """One expiry/alert sweep now (every scheduler job once); prints what it changed."""
    from gmp_mes.notify import deliver_pending
    from gmp_mes.scheduler import run_jobs

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    result = run_jobs(app)
    for line in result.changes:
        click.echo(line)
    if not result.changes:
        click.echo("sweep: nothing changed")
    # Delivery after the jobs committed; retries are left to the running scheduler.
    for line in deliver_pending(app).lines:
        click.echo(f"delivery: {line}")
    if result.failed:
        raise click.ClickException(f"failed jobs (see the log): {', '.join(result.failed)}")
