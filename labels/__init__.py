"""The labels domain: registered by the application factory through init_app."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api
from sqlalchemy.orm import Session


def _ensure_signing_key(app: Flask, _session: Session) -> list[str]:
    """``gmp-mes init``: create the Ed25519 label signing key if it is missing."""
    from labels import keys

    return keys.ensure_key(app.config["GMP_SETTINGS"].signing_key)


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, pages, CLI commands and jobs."""
    from gmp_mes.app import add_init_hook
    from gmp_mes.pages import add_nav
    from labels import api as labels_api
    from labels import cli, pages, services

    services.set_default_key_path(app.config["GMP_SETTINGS"].signing_key)
    add_init_hook(app, _ensure_signing_key)
    app.cli.add_command(cli.labels_group)
    api.register_blueprint(labels_api.blp)
    app.register_blueprint(pages.bp)
    add_nav(app, "labels_pages.sheet_page", "Labels", ("operator", "clinician"))
