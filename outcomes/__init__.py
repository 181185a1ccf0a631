"""After the infusion (SPEC §16, issue 21): follow-up visits planned at the administration,
signed follow-up records with the CRS and ICANS grades computed from their elements
(``outcomes.grading``), overdue visits alerted once.

Installed as a domain (``gmp_mes.registry``) on the layer above qc; set up by init_app.
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api
from sqlalchemy.orm import Session

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ("identity", "batches", "qc")


def _check_agreements(app: Flask, _session: Session) -> list[str]:
    """``gmp-mes init``: a bad agreement file stops the installation with its one line
    (as a bad process definition does)."""
    from outcomes import services

    found = services.agreements(app)
    return [f"outcome agreements: {len(found)} valid"]


def _agreements_at_start(app: Flask) -> None:
    """At start the app names a bad agreement file in its log, once, and runs on: the
    follow-up must stay usable; every use of the agreements refuses with the same line
    (409 ``agreement_definition_invalid``, the pages show it)."""
    from outcomes import services

    try:
        services.agreements(app)
    except services.AgreementInvalid as exc:
        app.logger.error("%s", exc.detail)


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, pages, jobs and the seams it provides."""
    from gmp_mes import registry
    from gmp_mes.registry import NavGroup, add_init_hook, add_job, add_nav
    from outcomes import api as outcomes_api
    from outcomes import cli, pages, services, sweep

    api.register_blueprint(outcomes_api.blp)
    app.register_blueprint(pages.bp)
    app.cli.add_command(cli.agreements_group)
    add_init_hook(app, _check_agreements)
    _agreements_at_start(app)
    add_job(app, sweep.job)  # follow_up_overdue alerts
    # SPEC §7b: /reports, an index other domains add to (registry.add_report).
    add_nav(app, "outcomes.reports_index", "Reports", ("qa", "clinician"),
            group=NavGroup.QUALITY)
    registry.add_report(app, "outcomes.outcome_report_page", "Outcomes after infusion",
                     pages.REPORT_ROLES)
    registry.add_report(app, "outcomes.agreements_page", "Outcome agreements",
                        pages.FOLLOW_UP_ROLES)
    # SPEC §16: the visits are planned when identity records the administration.
    registry.administered.provide("outcomes", services.on_administered)
    registry.patient_sections.provide("outcomes", pages.patient_section)
