"""Scheduler job: ``qc_overdue`` alerts for required QC results not in by their due time
(the sample step's time plus the test's ``time_to_result``).

One alert per batch and test (``cause`` is unique), so reruns never duplicate one.
"""

from __future__ import annotations

from datetime import datetime

from flask import Flask
from sqlalchemy.orm import Session

from gmp_mes.alerts import AlertKind, AlertSpec, Severity, raise_alert
from gmp_mes.audit import Actor, format_time
from gmp_mes.clock import utcnow
from qc import services

ACTOR = Actor.system("qc-sweep")


def overdue_specs(session: Session, now: datetime | None = None) -> list[AlertSpec]:
    now = now or utcnow()
    specs = []
    for batch, open_tests in services.pending_qc(session):
        for row in open_tests:
            due_at = row.due_at
            if due_at is None or due_at > now:
                continue
            specs.append(AlertSpec(
                cause=f"qc_overdue:{batch.batch_number}:{row.test}",
                kind=AlertKind.QC_OVERDUE.value,
                # Overdue after a conditional release: the product may be infused already.
                severity=(Severity.CRITICAL if services.awaits_final_release(batch.status)
                          else Severity.MAJOR).value,
                subject_type="batch",
                subject_id=batch.batch_number,
                message=f"QC {row.test} of batch {batch.batch_number} was due "
                        f"{format_time(due_at)} and has no valid result",
                roles=("qc", "qa"),
                site_code=batch.site_code,
                due_at=due_at,
            ))
    return specs


def sweep(session: Session, now: datetime | None = None) -> list[str]:
    """Raise the overdue alerts in the caller's transaction; one line per new alert."""
    if session.info.get("actor") is None:
        session.info["actor"] = ACTOR
    return [
        f"qc overdue: {spec.subject_id} {spec.cause.rsplit(':', 1)[-1]}"
        for spec in overdue_specs(session, now)
        if raise_alert(session, spec) is not None
    ]


def job(app: Flask) -> list[str]:
    """Scheduler job (``gmp_mes.app.add_job``): one sweep in its own transaction."""
    with app.extensions["gmp_mes.db"].transaction(actor=ACTOR) as session:
        return sweep(session)
