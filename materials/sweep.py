"""Scheduler job: warnings before a lot with stock left expires (SPEC §11), 30 and 7 days
ahead, one alert per lot and threshold (``cause`` ``lot_expiry:<lot_id>:P30D`` is unique,
so reruns and overlapping sweeps never raise one twice). A rejected or used-up lot warns
nobody; an alert goes to QA and the operators of the lot's site."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes.alerts import AlertSpec, Severity, raise_alert
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.localtime import in_utc
from materials.models import LotStatus, MaterialLot
from materials.services._common import show

ACTOR = Actor.system("materials-sweep")
KIND = "lot_expiry_warning"
# ISO 8601 duration -> how long before expiry the warning is raised.
THRESHOLDS: tuple[tuple[str, timedelta], ...] = (("P30D", timedelta(days=30)),
                                                  ("P7D", timedelta(days=7)))


def expiry_specs(session: Session, now: datetime) -> list[AlertSpec]:
    horizon = now + max(delta for _, delta in THRESHOLDS)
    lots = session.scalars(
        select(MaterialLot)
        .where(MaterialLot.status != LotStatus.REJECTED.value,
               MaterialLot.remaining > 0,
               MaterialLot.expires_at > now, MaterialLot.expires_at <= horizon)
        .order_by(MaterialLot.lot_id))
    specs = []
    for lot in lots:
        for name, delta in THRESHOLDS:
            if lot.expires_at - delta > now:
                continue
            specs.append(AlertSpec(
                cause=f"lot_expiry:{lot.lot_id}:{name}",
                kind=KIND,
                severity=(Severity.WARNING if name == "P30D" else Severity.MAJOR).value,
                subject_type="material_lot",
                subject_id=lot.lot_id,
                message=f"lot {lot.lot_id} ({lot.material_code}, supplier lot "
                        f"{lot.supplier_lot}) expires {in_utc(lot.expires_at)} with "
                        f"{show(lot.remaining)} {lot.material.unit} left ({lot.status})",
                roles=("qa", "operator"),
                site_code=lot.site_code,
                due_at=lot.expires_at,
            ))
    return specs


def sweep(session: Session, now: datetime | None = None) -> list[str]:
    """Raise the warnings in the caller's transaction; one line per new alert."""
    if session.info.get("actor") is None:
        session.info["actor"] = ACTOR
    now = now or utcnow()
    return [f"lot expiry warning: {spec.subject_id} {spec.cause.rsplit(':', 1)[-1]}"
            for spec in expiry_specs(session, now) if raise_alert(session, spec) is not None]


def job(app: Flask) -> list[str]:
    """Scheduler job (``registry.add_job``): one sweep in its own transaction."""
    with app.extensions["gmp_mes.db"].transaction(actor=ACTOR) as session:
        return sweep(session)
