"""The batches domain: installed as a domain (``gmp_mes.registry``), set up by init_app."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ("identity", "processes")


def _deviation_job(app: Flask) -> list[str]:
    """Scheduler job: alert QA about deviations open longer than deviation_alert_days."""
    from datetime import timedelta

    from batches import services
    from gmp_mes.audit import Actor

    days = app.config["GMP_SETTINGS"].deviation_alert_days
    with app.extensions["gmp_mes.db"].transaction(actor=Actor.system("scheduler")) as s:
        return services.alert_overdue_deviations(s, timedelta(days=days))


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, pages, CLI commands and jobs."""
    from batches import api as batches_api
    from batches import cli, pages, services
    from gmp_mes import registry
    from gmp_mes.registry import NavGroup, add_dashboard_panel, add_job, add_nav, add_search

    api.register_blueprint(batches_api.blp)
    app.register_blueprint(pages.bp)
    app.cli.add_command(cli.export_group)
    add_nav(app, "batches.batch_list", "Batches", ("operator", "qc", "qa", "admin"),
            group=NavGroup.WORK)
    add_dashboard_panel(app, pages.dashboard_panel)
    add_search(app, pages.search_target)
    add_job(app, _deviation_job)
    registry.patient_batches.provide("batches", services.batches_of_coi)
