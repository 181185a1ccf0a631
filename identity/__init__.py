"""The identity domain: installed as a domain (``gmp_mes.registry``), set up by init_app."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ("labels", "processes")


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, pages, CLI commands and jobs."""
    from gmp_mes.registry import NavGroup, add_dashboard_panel, add_job, add_nav, add_search
    from identity import api as identity_api
    from identity import label_subjects, pages, sweep

    api.register_blueprint(identity_api.blp)
    app.register_blueprint(pages.bp)
    add_nav(app, "identity.scan_page", "Scan", ("operator", "qc", "qa", "clinician"),
            group=NavGroup.FLOOR)
    add_nav(app, "identity.bedside_page", "Bedside", ("clinician",), group=NavGroup.FLOOR)
    add_nav(app, "identity.patient_list", "Patients", group=NavGroup.FLOOR)
    add_nav(app, "identity.collection_page", "Collection", ("clinician", "operator"),
            group=NavGroup.FLOOR)
    add_dashboard_panel(app, pages.dashboard_panel)
    add_search(app, pages.search_target)
    add_job(app, sweep.job)  # the expiry sweep (identity/sweep.py, alerts engineer)
    label_subjects.provide()  # what labels print (gmp_mes.registry.label_subjects)
