"""The qc domain: installed as a domain (``gmp_mes.registry``), set up by init_app."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ("batches", "identity")


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, pages, CLI commands and jobs."""
    from gmp_mes import registry
    from gmp_mes.registry import NavGroup, add_dashboard_panel, add_job, add_nav
    from qc import api as qc_api
    from qc import pages, services, sweep

    api.register_blueprint(qc_api.blp)
    app.register_blueprint(pages.bp)
    add_nav(app, "qc.work_list", "QC", ("qc",), group=NavGroup.QUALITY)
    add_nav(app, "qc.release_page", "Release", ("qa",), group=NavGroup.QUALITY)
    add_dashboard_panel(app, pages.qc_panel)
    add_dashboard_panel(app, pages.release_panel)
    add_job(app, sweep.job)  # qc_overdue alerts
    # SPEC §6: a bedside MATCH on a conditionally released product names the pending tests.
    registry.release_warnings.provide("qc", services.release_warnings)
    registry.batch_record_sections.provide("qc", services.batch_record_sections)
