"""The ``gmp-mes`` console entry point: the top of the import graph (nothing imports it).

It builds the application from every installed domain (``gmp_mes.registry``); the
commands themselves live with the core (``gmp_mes.cli``) and the domains.
"""

from __future__ import annotations

import sys

import click
from flask.cli import FlaskGroup

from gmp_mes.app import create_app
from gmp_mes.settings import SettingsError, load_settings


def main() -> None:
    """Console entry point: settings are checked first so errors are one line."""
    try:
        load_settings()
    except SettingsError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    FlaskGroup(
        name="gmp-mes", create_app=create_app, add_version_option=False, load_dotenv=False
    ).main(prog_name="gmp-mes")
