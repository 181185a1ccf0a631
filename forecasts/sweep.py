"""Scheduler job: the forecast and trend alerts (SPEC §15). Each cause is unique
(``forecast_below_target:<batch>``, ``trend_violation:<process>:<attribute>:<rule>:<batch>``),
so reruns and overlapping sweeps raise each alert once; every new alert is an audit
event in the sweep's transaction (gmp_mes.alerts)."""

from __future__ import annotations

from flask import Flask
from sqlalchemy.orm import Session

from forecasts import services
from gmp_mes.audit import Actor

ACTOR = Actor.system("forecasts-sweep")


def sweep(session: Session) -> list[str]:
    """Raise the alerts in the caller's transaction; one line per new alert."""
    if session.info.get("actor") is None:
        session.info["actor"] = ACTOR
    return services.sweep_forecasts(session) + services.sweep_trends(session)


def job(app: Flask) -> list[str]:
    """Scheduler job (``registry.add_job``): one sweep in its own transaction."""
    with app.extensions["gmp_mes.db"].transaction(actor=ACTOR) as session:
        return sweep(session)
