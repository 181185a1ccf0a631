"""The validation domain (SPEC §17): installation qualification, the traceability matrix,
signed archives of GMP records, and backup and restore. Registered by the application
factory through init_app."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ("batches", "identity", "labels")


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's pages and CLI commands (it has no API and no jobs)."""
    from gmp_mes.registry import NavGroup, add_nav
    from validation import cli, pages

    cli.register(app)
    app.register_blueprint(pages.bp)
    add_nav(app, "validation.iq_page", "Validation", ("admin",), group=NavGroup.ADMIN)
