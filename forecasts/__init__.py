"""The forecasts domain (SPEC §15, issue 20): predictive quality.

A batch's expansion forecast (growth model fitted to its daily counts, a 90 % prediction
interval for the cells at the harvest day, the probability of reaching the target) and
control charts across the batches of a process (individuals and moving-range charts,
Nelson rules 1-4). Above qc: it reads batches' step records and qc's numeric results
through their services. batches draws the forecast band on its expansion chart through
the ``registry.expansion_forecast`` seam, without importing this package.
Forecasts advise: nothing here changes a status; the alerts are audited like any other.
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ("batches", "qc")


def init_app(app: Flask, api: Api) -> None:
    """Register the API, the trends pages, the alert job and the forecast seam."""
    from forecasts import api as forecasts_api
    from forecasts import pages, services, sweep
    from gmp_mes import registry
    from gmp_mes.registry import NavGroup, add_job, add_nav

    api.register_blueprint(forecasts_api.blp)
    app.register_blueprint(pages.bp)
    add_nav(app, "forecasts.trends_index", "Trends", pages.PAGE_ROLES,
            group=NavGroup.QUALITY)
    add_job(app, sweep.job)  # forecast_below_target and trend_violation alerts
    registry.expansion_forecast.provide("forecasts", services.overlay)
