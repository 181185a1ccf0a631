"""What touches the cells (SPEC §11): the material master, lots received, released or
rejected by QA, their labels, their use at the steps and the recall (where used).

Installed as a domain (``gmp_mes.registry``), set up by ``init_app``; it sits below batches
and plugs into the step through ``gmp_mes.registry.step_requirements``.
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ("labels", "identity")


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, pages, CLI commands, jobs and seams."""
    from gmp_mes import registry
    from gmp_mes.registry import NavGroup, add_dashboard_panel, add_job, add_nav
    from materials import api as materials_api
    from materials import cli, pages, services, sweep

    api.register_blueprint(materials_api.blp)
    app.register_blueprint(pages.bp)
    app.cli.add_command(cli.lots_group)
    add_nav(app, "materials.materials_page", "Materials", ("operator", "qc", "qa", "admin"),
            group=NavGroup.WORK)
    add_job(app, sweep.job)  # lot expiry warnings (30 and 7 days ahead)
    add_dashboard_panel(app, pages.dashboard_panel)
    # SPEC §11: the lots a step uses are checked, consumed and signed with the step.
    registry.step_requirements.provide("materials", services.check_step_materials)
    registry.batch_record_sections.provide("materials", services.batch_record_sections)
    registry.scanned_subjects.provide("materials", services.scanned_lot)
