"""Training records (SPEC §12; EU GMP Part IV 3, 21 CFR 211.25): qualifications granted by
QA or an administrator with an e-signature and a validity, revoked with a reason, never
overwritten (a renewal is a new record); the check at a step that declares a
``qualification`` (performer and verifier must hold it at the step's time); the training
matrix page; warnings before a qualification of someone working on a running batch expires.

Installed as a domain (``gmp_mes.registry``), set up by ``init_app``; it sits above batches
(it reads batch status through ``batches.services``) and plugs into the step through
``gmp_mes.registry.step_requirements`` under the owner name ``qualification``.
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ("processes", "batches")


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, pages, nav entry, panel, job and seam."""
    from gmp_mes import registry
    from gmp_mes.registry import NavGroup, add_dashboard_panel, add_job, add_nav
    from training import api as training_api
    from training import pages, services, sweep

    api.register_blueprint(training_api.blp)
    app.register_blueprint(pages.bp)
    add_nav(app, "training.matrix", "Training", pages.VIEW_ROLES, group=NavGroup.QUALITY)
    add_job(app, sweep.job)  # qualification_expiring warnings
    add_dashboard_panel(app, pages.dashboard_panel)
    # SPEC §12: a step declaring a qualification is refused for a performer or verifier
    # without a valid one at the step's time (`not_qualified`).
    registry.step_requirements.provide("qualification", services.check_step_qualification)
