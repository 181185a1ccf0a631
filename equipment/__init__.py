"""Equipment (SPEC §11, 21 CFR 211.182): the registry, the signed logbook (calibrated,
maintained, cleaned, out of service, back in service), the status computed from it, labels
and the use at the steps.

Installed as a domain (``gmp_mes.registry``), set up by ``init_app``; it sits below batches
and plugs into the step through ``gmp_mes.registry.step_requirements``.
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ("labels",)


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, pages, CLI commands, jobs and seams."""
    from equipment import api as equipment_api
    from equipment import cli, pages, services, sweep
    from gmp_mes import registry
    from gmp_mes.registry import NavGroup, add_dashboard_panel, add_job, add_nav, add_search

    api.register_blueprint(equipment_api.blp)
    app.register_blueprint(pages.bp)
    app.cli.add_command(cli.equipment_group)
    add_nav(app, "equipment.equipment_list", "Equipment",
            ("operator", "qa", "qc", "admin"), group=NavGroup.WORK)
    add_search(app, pages.search_target)  # the header box: an equipment id
    add_job(app, sweep.job)  # calibration due and overdue alerts
    add_dashboard_panel(app, pages.dashboard_panel)
    # SPEC §11: the step is refused with every equipment reason; uses are logged.
    registry.step_requirements.provide("equipment", services.check_step_equipment)
    registry.batch_record_sections.provide("equipment", services.batch_record_sections)
    registry.scanned_subjects.provide("equipment", services.scanned_subject)
