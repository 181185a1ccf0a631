"""Calibration alerts (21 CFR 211.68; SPEC §11 "the sweep warns before a calibration falls
due"), raised by the scheduler's sweep (``equipment.sweep.job``).

One alert per equipment, calibration and threshold: the cause names the calibration's
validity (``calibration_due:<id>:<valid until>:P14D``, ``calibration_overdue:<id>:<valid
until>``; ``-`` for equipment under a calibration interval never calibrated), so reruns never
duplicate one and the next calibration starts its own. Addressed to QA and the operators
of the equipment's site. A new calibration acknowledges the open ones (logbook).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from equipment.models import Equipment
from equipment.services.status import NOTHING_LOGGED, standings
from gmp_mes.alerts import AlertSpec, Severity
from gmp_mes.durations import parse_duration
from gmp_mes.localtime import in_utc

# Warnings before a calibration's validity ends, longest first.
WARN_BEFORE = ("P14D", "P3D")
DUE, OVERDUE = "calibration_due", "calibration_overdue"
ROLES = ("qa", "operator")


def calibration_alerts(session: Session, now: datetime) -> list[AlertSpec]:
    """The calibration alerts due at ``now`` for every piece of equipment (two queries)."""
    equipment = list(session.scalars(select(Equipment).order_by(Equipment.equipment_id)))
    logged = standings(session)
    specs: list[AlertSpec] = []
    for row in equipment:
        valid_until = logged.get(row.equipment_id, NOTHING_LOGGED).calibration_valid_until
        name = f"{row.name} ({row.equipment_id})"
        if valid_until is None:
            if row.calibration_interval is not None:
                specs.append(AlertSpec(
                    cause=f"{OVERDUE}:{row.equipment_id}:-", kind=OVERDUE,
                    severity=Severity.MAJOR.value, subject_type="equipment",
                    subject_id=row.equipment_id, roles=ROLES, site_code=row.site_code,
                    message=f"{name} needs calibration every {row.calibration_interval} and "
                            "has never been calibrated: it cannot be used at a step"))
            continue
        stamp = valid_until.astimezone(UTC).strftime("%Y%m%d%H%M")
        if valid_until <= now:
            specs.append(AlertSpec(
                cause=f"{OVERDUE}:{row.equipment_id}:{stamp}", kind=OVERDUE,
                severity=Severity.MAJOR.value, subject_type="equipment",
                subject_id=row.equipment_id, roles=ROLES, site_code=row.site_code,
                due_at=valid_until,
                message=f"the calibration of {name} expired at {in_utc(valid_until)}: "
                        "it cannot be used at a step until calibrated"))
            continue
        for threshold in WARN_BEFORE:
            if now >= valid_until - parse_duration(threshold):
                specs.append(AlertSpec(
                    cause=f"{DUE}:{row.equipment_id}:{stamp}:{threshold}", kind=DUE,
                    severity=Severity.WARNING.value, subject_type="equipment",
                    subject_id=row.equipment_id, roles=ROLES, site_code=row.site_code,
                    due_at=valid_until,
                    message=f"the calibration of {name} is valid until "
                            f"{in_utc(valid_until)} (warning {threshold} before)"))
    return specs
