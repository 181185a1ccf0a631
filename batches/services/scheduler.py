"""Scheduler job: deviations left open too long alert QA."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from batches.models import Deviation, DeviationSeverity, DeviationStatus
from batches.services.batches import get_batch
from gmp_mes.alerts import AlertKind, AlertSpec, raise_alert
from gmp_mes.clock import utcnow
from gmp_mes.durations import format_duration


def alert_overdue_deviations(session: Session, older_than: timedelta) -> list[str]:
    """Raise one alert per deviation not closed ``older_than`` after it was opened
    (EU GMP Chapter 1.4(xiv): deviations investigated in time). One alert per cause:
    reruns and overlapping sweeps never duplicate it."""
    limit = utcnow() - older_than
    overdue = session.scalars(select(Deviation).where(
        Deviation.status != DeviationStatus.CLOSED.value, Deviation.opened_at <= limit,
    ).order_by(Deviation.id))
    lines = []
    for deviation in overdue:
        batch = get_batch(session, deviation.batch_number)
        alert = raise_alert(session, AlertSpec(
            cause=f"{AlertKind.DEVIATION_OPEN.value}:{deviation.number}",
            kind=AlertKind.DEVIATION_OPEN.value,
            severity="critical" if deviation.severity == DeviationSeverity.CRITICAL else "major",
            subject_type="deviation", subject_id=deviation.number,
            message=(f"deviation {deviation.number} ({deviation.severity}, {deviation.status}) "
                     f"of batch {deviation.batch_number} is open for more than "
                     f"{format_duration(older_than)}"),
            roles=("qa",), site_code=batch.site_code,
            due_at=deviation.opened_at + older_than,
        ))
        if alert is not None:
            lines.append(f"alert: deviation {deviation.number} open too long")
    return lines
