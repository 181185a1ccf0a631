"""Scheduler job: EM excursions reach the batches that entered the room inside their window
after the result was entered (``rooms.services.sweep_excursions``), run by every scheduler
round and by ``gmp-mes sweep``. One deviation per batch and excursion: reruns add nothing."""

from __future__ import annotations

from datetime import datetime

from flask import Flask
from sqlalchemy.orm import Session

from gmp_mes.audit import Actor
from rooms import services

ACTOR = Actor.system("rooms-sweep")


def sweep(session: Session, now: datetime | None = None) -> list[str]:
    """Link the new affected batches in the caller's transaction; one line per link."""
    if session.info.get("actor") is None:
        session.info["actor"] = ACTOR
    return services.sweep_excursions(session, now)


def job(app: Flask) -> list[str]:
    """Scheduler job (``gmp_mes.registry.add_job``): one sweep in its own transaction."""
    with app.extensions["gmp_mes.db"].transaction(actor=ACTOR) as session:
        return sweep(session)
