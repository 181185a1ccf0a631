"""The processes domain: process definitions (master batch records), their versions and
QA's approval, hold times and shelf lives (SPEC §3). Below identity and batches, which ask
it; installed as a domain (``gmp_mes.registry``), set up by init_app."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api
from sqlalchemy.orm import Session

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ()


def _load_definitions(app: Flask, session: Session) -> list[str]:
    """``gmp-mes init``: load the process definitions, unapproved until QA approves them."""
    from processes import services

    settings = app.config["GMP_SETTINGS"]
    return services.load_process_definitions(
        session, [settings.builtin_process_dir, settings.process_dir]
    )


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, page, CLI group and init hook."""
    from gmp_mes.registry import NavGroup, add_init_hook, add_nav
    from processes import api as processes_api
    from processes import cli, pages

    api.register_blueprint(processes_api.blp)
    app.register_blueprint(pages.bp)
    app.cli.add_command(cli.processes_group)
    add_init_hook(app, _load_definitions)
    add_nav(app, "processes.process_list", "Processes", ("qa", "admin"), group=NavGroup.QUALITY)
