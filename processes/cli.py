"""``gmp-mes processes ...`` (SPEC §8)."""

from __future__ import annotations

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from gmp_mes.audit import Actor
from gmp_mes.cli import read_password, unit_of_work
from gmp_mes.models import Meaning, User
from gmp_mes.signatures import SignatureInput
from processes import services


@click.group("processes")
def processes_group() -> None:
    """Process definitions (master batch records) and their QA approval."""


@processes_group.command("list")
@with_appcontext
def processes_list() -> None:
    """Every loaded process version with its approval state."""
    with unit_of_work() as session:
        versions = services.list_processes(session)
        if not versions:
            click.echo("no process versions loaded: run `gmp-mes init`")
        for process in versions:
            state = (f"approved {process.approval.signature.manifestation()}"
                     if process.approval else "awaiting QA approval")
            click.echo(f"{process.code} v{process.version}  {process.name}  [{state}]  "
                       f"digest {process.digest[:12]}  from {process.source}")


@processes_group.command("approve")
@click.argument("code")
@click.argument("version", type=int)
@click.option("--user", "username", required=True, help="the approving QA user")
@click.option("--reason", default=None, help="optional reason shown with the signature")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@with_appcontext
def processes_approve(
    code: str, version: int, username: str, reason: str | None, password_stdin: bool
) -> None:
    """Approve CODE VERSION with the QA user's e-signature (meaning: approved)."""
    password = read_password(password_stdin, prompt=f"Password of {username}")
    with unit_of_work() as session:
        user = session.scalar(select(User).where(User.username == username.strip().lower()))
        if user is None:
            raise click.ClickException(f"no user {username!r}")
        # The signer is the actor: the approval is attributable to the person, not the shell.
        session.info["actor"] = Actor(user.username, user.id, user.full_name)
        process = services.approve_process(
            session, code, version, user_id=user.id,
            signature=SignatureInput(password=password, meaning=Meaning.APPROVED.value,
                                     reason=reason),
        )
        assert process.approval is not None  # approve_process records it
        click.echo(f"process {process.key} approved: {process.approval.signature.manifestation()}")
