"""Alerts: expiry warnings, expired items, hold time, post-thaw limit, overdue QC,
positive results after release, forged or voided labels.

Exactly one alert per cause: ``cause`` is unique in the database and alerts are
inserted with ON CONFLICT DO NOTHING, so reruns, overlapping sweeps and two
nodes never duplicate one. Any domain raises alerts through :func:`raise_alert`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from gmp_mes import audit
from gmp_mes.audit import Audited
from gmp_mes.clock import utcnow
from gmp_mes.db import Base, UTCDateTime, check_in
from gmp_mes.errors import Conflict, NotFound


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    MAJOR = "major"
    CRITICAL = "critical"


class AlertStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"


class Alert(Audited, Base):
    __tablename__ = "alert"
    __table_args__ = (
        CheckConstraint(check_in("severity", Severity), name="severity"),
        CheckConstraint(check_in("status", AlertStatus), name="status"),
        Index("ix_alert_status_site", "status", "site_code"),
        Index("ix_alert_subject", "subject_type", "subject_id"),
    )
    audit_entity = "alert"

    id: Mapped[int] = mapped_column(primary_key=True)
    cause: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    severity: Mapped[str] = mapped_column(String(10))
    subject_type: Mapped[str] = mapped_column(String(20))
    subject_id: Mapped[str] = mapped_column(String(80))
    message: Mapped[str] = mapped_column(Text)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    site_code: Mapped[str | None] = mapped_column(String(32))
    roles: Mapped[str] = mapped_column(String(100))  # comma-separated recipient roles
    status: Mapped[str] = mapped_column(String(15), default=AlertStatus.OPEN.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    acknowledged_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledge_note: Mapped[str | None] = mapped_column(Text)


@dataclass(frozen=True)
class AlertSpec:
    cause: str
    kind: str
    severity: str
    subject_type: str
    subject_id: str
    message: str
    roles: tuple[str, ...]
    site_code: str | None = None
    due_at: datetime | None = None


def raise_alert(session: Session, spec: AlertSpec) -> Alert | None:
    """Insert the alert unless one exists for the same cause; returns the new alert or None."""
    values = {
        "cause": spec.cause,
        "kind": spec.kind,
        "severity": spec.severity,
        "subject_type": spec.subject_type,
        "subject_id": spec.subject_id,
        "message": spec.message,
        "due_at": spec.due_at,
        "site_code": spec.site_code,
        "roles": ",".join(spec.roles),
        "status": AlertStatus.OPEN.value,
        "created_at": utcnow(),
    }
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(Alert).values(**values).on_conflict_do_nothing(index_elements=["cause"])
        .returning(Alert.id)
    )
    new_id = session.execute(statement).scalar()
    if new_id is None:
        return None
    audit.record(session, "create", "alert", str(new_id), new=values)
    return session.get(Alert, new_id)


def acknowledge(session: Session, alert_id: int, user_id: int, note: str | None = None) -> Alert:
    alert = session.scalar(select(Alert).where(Alert.id == alert_id).with_for_update())
    if alert is None:
        raise NotFound(f"no alert {alert_id}")
    if alert.status != AlertStatus.OPEN.value:
        raise Conflict(f"alert {alert_id} is already acknowledged")
    alert.status = AlertStatus.ACKNOWLEDGED.value
    alert.acknowledged_by = user_id
    alert.acknowledged_at = utcnow()
    alert.acknowledge_note = note
    session.flush()
    return alert
