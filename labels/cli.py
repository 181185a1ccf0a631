"""``gmp-mes labels ...``: public key export, key rotation, offline verification."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from labels import keys
from labels.payload import ASSET_KINDS, InvalidLabel, LabelPayload, parse, verify

KIND_NAMES = {
    "SM": "starting material",
    "IM": "intermediate",
    "FP": "final product",
    "QS": "QC sample",
    "RS": "retention sample",
    "WB": "patient wristband",
    **ASSET_KINDS,
}


def _key_path() -> Path:
    return Path(current_app.config["GMP_SETTINGS"].signing_key)


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


@click.group("labels")
def labels_group() -> None:
    """Label signing keys and offline label verification."""


@labels_group.command("public-key")
@click.option(
    "--all",
    "all_keys",
    is_flag=True,
    help="also the retired keys (labels printed before a rotation)",
)
@with_appcontext
def public_key_command(all_keys: bool) -> None:
    """Print the current public key (PEM) for offline verifiers."""
    try:
        ring = keys.keyring(_key_path())
    except keys.SigningKeyError as exc:
        _fail(str(exc))
    for key in ring.public_keys if all_keys else (ring.current_public,):
        click.echo(keys.public_pem(key), nl=False)


@labels_group.command("rotate-key")
@with_appcontext
def rotate_key_command() -> None:
    """Retire the current signing key (it still verifies) and create a new one."""
    try:
        retired, new = keys.rotate_key(_key_path())
    except (keys.SigningKeyError, OSError) as exc:
        _fail(str(exc))
    click.echo(f"signing key rotated: retired {retired}, now signing with {new}")


def describe(payload: LabelPayload, signer: str) -> list[str]:
    coi = payload.coi_id
    expiry = payload.expires_at.strftime("%Y-%m-%d %H:%M UTC") if payload.expires_at else "none"
    return [
        f"valid label, signed by key {signer}",
        f"kind:    {payload.kind_code} ({KIND_NAMES[payload.kind_code]})",
        *([f"id:      {payload.subject_id}", "COI ID:  - (names no patient)"] if payload.asset
          else [f"item:    {payload.subject_id}",
                f"COI ID:  {coi} (printed {coi[:5]} {coi[5:7]} {coi[7:13]} [{coi[13]}])"]),
        f"expires: {expiry}",
        f"copy:    {payload.serial}"
        if payload.serial
        else "copy:    - (6-field label, printed before per-copy serials)",
        "offline check: signature only; voids are known only to the online system",
    ]


@labels_group.command("verify")
@click.argument("payload")
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM file of one or more public keys (repeatable); default: this installation's",
)
@with_appcontext
def verify_command(payload: str, public_keys: tuple[Path, ...]) -> None:
    """Check a label payload offline with public key(s) only; exit 1 if invalid."""
    try:
        if public_keys:
            candidates = [k for p in public_keys for k in keys.load_public_keys(p)]
        else:
            candidates = list(keys.keyring(_key_path()).public_keys)
    except keys.SigningKeyError as exc:
        _fail(str(exc))
    try:
        parsed = parse(payload)
        signer = verify(parsed, candidates)
    except InvalidLabel as exc:
        click.echo(f"INVALID label ({exc.code}): {exc.message}", err=True)
        sys.exit(1)
    for line in describe(parsed, keys.key_id(signer)):
        click.echo(line)
