"""Scheduler job: ``qualification_expiring`` warnings (``training.services.expiry``), run
by every scheduler round and by ``gmp-mes sweep``. One alert per cause: reruns raise nothing."""

from __future__ import annotations

from datetime import datetime

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes.alerts import Alert, raise_alerts
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from training import services

ACTOR = Actor.system("training-sweep")


def sweep(session: Session, now: datetime | None = None) -> list[str]:
    """Raise the warnings in the caller's transaction; one line per new alert."""
    if session.info.get("actor") is None:
        session.info["actor"] = ACTOR
    new = raise_alerts(session, services.expiry_alerts(session, now or utcnow()))
    if not new:
        return []
    causes = session.scalars(select(Alert.cause).where(Alert.id.in_(new)).order_by(Alert.id))
    return [f"training {cause}" for cause in causes]


def job(app: Flask) -> list[str]:
    """Scheduler job (``gmp_mes.registry.add_job``): one sweep in its own transaction."""
    with app.extensions["gmp_mes.db"].transaction(actor=ACTOR) as session:
        return sweep(session)
