"""Alerts: expiry warnings, expired items, hold time, post-thaw limit, overdue QC,
positive results after release, forged or voided labels.

Exactly one alert per cause: ``cause`` is unique in the database and alerts are
inserted with ON CONFLICT DO NOTHING, so reruns, overlapping sweeps and two
nodes never duplicate one. Any domain raises alerts through :func:`raise_alert`
(set-based sweeps through :func:`raise_alerts`); every alert is shown in-app at once
and sent by e-mail and webhook after its transaction committed (gmp_mes.notify).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    false,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from gmp_mes import audit, registry
from gmp_mes.audit import Audited, Entry
from gmp_mes.clock import utcnow
from gmp_mes.db import Base, UTCDateTime, check_in
from gmp_mes.errors import Forbidden, NotFound, conflict
from gmp_mes.models import User


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    MAJOR = "major"
    CRITICAL = "critical"


class AlertStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"


class AlertKind(enum.StrEnum):
    """The kinds raised by the expiry sweep; other domains add their own (free text)."""

    EXPIRY_WARNING = "expiry_warning"
    EXPIRED = "expired"
    HOLD_TIME_EXCEEDED = "hold_time_exceeded"
    POST_THAW_EXCEEDED = "post_thaw_exceeded"
    QC_OVERDUE = "qc_overdue"
    DEVIATION_OPEN = "deviation_open"


class Channel(enum.StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"


class DeliveryOutcome(enum.StrEnum):
    SENT = "sent"
    FAILED = "failed"  # a retry follows at next_attempt_at, unless it is NULL (gave up)
    SKIPPED = "skipped"  # nothing to send to (no recipient with an e-mail address)


class Alert(Audited, Base):
    __tablename__ = "alert"
    __table_args__ = (
        CheckConstraint(check_in("severity", Severity), name="severity"),
        CheckConstraint(check_in("status", AlertStatus), name="status"),
        Index("ix_alert_status_site", "status", "site_code"),
        Index("ix_alert_subject", "subject_type", "subject_id"),
        Index("ix_alert_created_at", "created_at"),
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

    acknowledger: Mapped[User | None] = relationship(lazy="joined")

    @property
    def role_list(self) -> list[str]:
        return [role for role in self.roles.split(",") if role]


class AlertDelivery(Base):
    """One delivery attempt of an alert on one channel (append-only, every attempt kept)."""

    __tablename__ = "alert_delivery"
    __table_args__ = (
        CheckConstraint(check_in("channel", Channel), name="channel"),
        CheckConstraint(check_in("outcome", DeliveryOutcome), name="outcome"),
        UniqueConstraint("alert_id", "channel", "attempt"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alert.id"))
    channel: Mapped[str] = mapped_column(String(10))
    attempt: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(Text)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(10))
    detail: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    final: Mapped[bool] = mapped_column(Boolean)


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


def _values(spec: AlertSpec, now: datetime) -> dict[str, Any]:
    return {
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
        "created_at": now,
    }


def _insert(session: Session) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def raise_alerts(
    session: Session, specs: Iterable[AlertSpec], *, events_before: Sequence[Entry] = ()
) -> list[int]:
    """Set-based :func:`raise_alert` for sweeps: one INSERT of all new alerts (causes
    already raised are skipped by the unique constraint), then one bulk append of the
    audit events: ``events_before`` (the sweep's own changes) followed by one
    ``create`` event per new alert. Returns the ids of the new alerts."""
    now = utcnow()
    rows: dict[str, dict[str, Any]] = {}
    for spec in specs:
        rows.setdefault(spec.cause, _values(spec, now))
    new = _insert_many(session, list(rows.values())) if rows else []
    events = list(events_before)
    events.extend(Entry("create", "alert", str(id_), new=rows[cause]) for id_, cause in new)
    audit.record_many(session, events)
    return [id_ for id_, _ in new]


_COLUMNS = (
    "cause",
    "kind",
    "severity",
    "subject_type",
    "subject_id",
    "message",
    "due_at",
    "site_code",
    "roles",
    "status",
    "created_at",
)
_PG_TYPES = (
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "timestamptz",
    "text",
    "text",
    "text",
    "timestamptz",
)


def _insert_many(session: Session, rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """One INSERT of many alerts, skipping existing causes; (id, cause) of the new ones.

    Straight to the driver: the ORM's per-row parameter handling would cost more than
    the database work for a sweep's thousands of rows.
    """
    connection = session.connection()
    columns = ", ".join(_COLUMNS)
    if connection.dialect.name == "postgresql":
        # unnest() of one array per column: one statement, one round trip, any size.
        arrays = ", ".join(f"%(c{i})s::{t}[]" for i, t in enumerate(_PG_TYPES))
        result = connection.exec_driver_sql(
            f"INSERT INTO alert ({columns}) SELECT * FROM unnest({arrays}) "
            "ON CONFLICT (cause) DO NOTHING RETURNING id, cause",
            {f"c{i}": [row[name] for row in rows] for i, name in enumerate(_COLUMNS)},
        )
        return sorted((row[0], row[1]) for row in result)
    # SQLite: one writer at a time. A write transaction (BEGIN IMMEDIATE) holds the lock
    # from its start, and a deferred one whose snapshot went stale cannot write at all
    # (SQLITE_BUSY_SNAPSHOT), so the ids above the previous maximum are exactly ours.
    before = connection.exec_driver_sql("SELECT coalesce(max(id), 0) FROM alert").scalar()
    table = Alert.__table__
    # The column types' own conversions (UTC datetimes as SQLite stores them), once per
    # distinct value: a sweep's alerts share their created_at and often their due time.
    processors = [
        table.c[name].type._cached_bind_processor(connection.dialect) for name in _COLUMNS
    ]
    converted: dict[tuple[int, Any], Any] = {}

    def convert(index: int, value: Any) -> Any:
        processor = processors[index]
        if processor is None or value is None:
            return value
        key = (index, value)
        if key not in converted:
            converted[key] = processor(value)
        return converted[key]

    values = [tuple(convert(i, row[name]) for i, name in enumerate(_COLUMNS)) for row in rows]
    connection.exec_driver_sql(
        f"INSERT INTO alert ({columns}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
        "ON CONFLICT (cause) DO NOTHING",
        values,
    )
    causes = {row["cause"] for row in rows}
    result = connection.exec_driver_sql(
        "SELECT id, cause FROM alert WHERE id > ? ORDER BY id", (before,)
    )
    # The columns selected, typed (mypy unpacks a Row as object).
    found = cast("Iterable[tuple[int, str]]", result)
    return [(id_, cause) for id_, cause in found if cause in causes]


def raise_alert(session: Session, spec: AlertSpec) -> Alert | None:
    """Insert the alert unless one exists for the same cause; returns the new alert or None."""
    values = _values(spec, utcnow())
    statement = (
        _insert(session)(Alert)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["cause"])
        .returning(Alert.id)
    )
    new_id = session.execute(statement).scalar()
    if new_id is None:
        return None
    audit.record(session, "create", "alert", str(new_id), new=values)
    return session.get(Alert, new_id)


def addressed_to(alert: Alert, user: Any) -> bool:
    """The alert names one of the user's roles, and is for the user's site (or for no
    site, or the user oversees every site: QA, admin)."""
    roles = set(user.roles)
    if roles.isdisjoint(alert.role_list):
        return False
    return (alert.site_code is None or alert.site_code == user.site.code
            or bool(roles & OVERSIGHT_ROLES))


def acknowledge(session: Session, alert_id: int, user: Any, note: str | None = None) -> Alert:
    """A user takes notice of an alert addressed to them; who and when is kept and
    audited (the row is an audited record, so the change writes an ``update`` event in
    this transaction). 403 when the alert is not addressed to the user's roles and site:
    an operator cannot silence a QA-only ``label_forged`` alert raised by their own scan."""
    alert = session.scalar(select(Alert).where(Alert.id == alert_id).with_for_update(of=Alert))
    if alert is None:
        raise NotFound(f"no alert {alert_id}")
    if not addressed_to(alert, user):
        raise Forbidden(f"alert {alert_id} is addressed to {', '.join(alert.role_list)}"
                        f"{' at ' + alert.site_code if alert.site_code else ''}, not to you")
    if alert.status != AlertStatus.OPEN.value:
        raise conflict("already_acknowledged", f"alert {alert_id} is already acknowledged")
    note = note.strip() if note and note.strip() else None
    alert.status = AlertStatus.ACKNOWLEDGED.value
    alert.acknowledged_by = user.id
    alert.acknowledged_at = utcnow()
    alert.acknowledge_note = note
    session.flush()
    return alert


def resolve_for_subject(
    session: Session, subject_type: str, subject_id: str, kinds: Iterable[str], why: str
) -> int:
    """Open alerts of these kinds about a subject whose cause is gone (an expiry alert of
    an item that was consumed or administered): acknowledged by the one who removed the
    cause, with ``why`` as the note, audited in this transaction. Returns how many."""
    actor = session.info.get("actor")
    open_ = list(session.scalars(select(Alert).where(
        Alert.subject_type == subject_type, Alert.subject_id == subject_id,
        Alert.kind.in_(list(kinds)), Alert.status == AlertStatus.OPEN.value,
    ).with_for_update(of=Alert)))
    now = utcnow()
    with audit.reason(session, why):
        for alert in open_:
            alert.status = AlertStatus.ACKNOWLEDGED.value
            alert.acknowledged_by = getattr(actor, "user_id", None)
            alert.acknowledged_at = now
            alert.acknowledge_note = why[:2000]
    if open_:
        session.flush()
    return len(open_)


# --- read side: API, pages, delivery ----------------------------------------------------


def get_alert(session: Session, alert_id: int, *, viewer: Any = None) -> Alert:
    """One alert; with ``viewer``, only one addressed to that user (else 404)."""
    alert = session.get(Alert, alert_id)
    if alert is None or (viewer is not None and not addressed_to(alert, viewer)):
        raise NotFound(f"no alert {alert_id}")
    return alert


def list_alerts(
    session: Session,
    *,
    status: str | None = None,
    site: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    offset: int = 0,
    viewer: Any = None,
) -> list[Alert]:
    """Alerts newest first; every filter is optional. With ``viewer`` (a user), only the
    alerts addressed to that user's roles and site, as the dashboard shows them."""
    statement = select(Alert).order_by(Alert.created_at.desc(), Alert.id.desc())
    if viewer is not None:
        roles = set(viewer.roles)
        statement = statement.where(
            _addressed_to(roles, viewer.site.code, bool(roles & OVERSIGHT_ROLES))
        )
    if status:
        statement = statement.where(Alert.status == status)
    if site:
        statement = statement.where(Alert.site_code == site.strip().upper())
    if kind:
        statement = statement.where(Alert.kind == kind)
    return list(session.scalars(statement.limit(limit).offset(offset)))


def _addressed_to(roles: Iterable[str], site_code: str | None, all_sites: bool) -> Any:
    """SQL condition: the alert names one of ``roles`` and is for the site (or no site)."""
    padded = "," + Alert.roles + ","
    role_match = [padded.like(f"%,{role},%") for role in sorted(roles)]
    condition = or_(*role_match) if role_match else false()
    if not all_sites:
        condition = condition & ((Alert.site_code.is_(None)) | (Alert.site_code == site_code))
    return condition


# QA and admins oversee every site; everyone else sees the alerts of their own site.
OVERSIGHT_ROLES = frozenset({"qa", "admin"})


def alerts_for_user(
    session: Session, roles: Iterable[str], site_code: str | None, *, limit: int = 10
) -> tuple[int, list[Alert]]:
    """Open alerts addressed to the user's roles (and site): the count and the most
    urgent ones (critical first, then by due time)."""
    roles = set(roles)
    condition = (Alert.status == AlertStatus.OPEN.value) & _addressed_to(
        roles, site_code, bool(roles & OVERSIGHT_ROLES)
    )
    total = session.scalar(select(func.count()).select_from(Alert).where(condition)) or 0
    severity_rank = {s.value: i for i, s in enumerate(reversed(list(Severity)))}
    rank = case(severity_rank, value=Alert.severity, else_=len(severity_rank))
    rows = session.scalars(
        select(Alert)
        .where(condition)
        .order_by(rank, Alert.due_at.is_(None), Alert.due_at, Alert.id)
        .limit(limit)
    )
    return total, list(rows)


def expiring_soon(
    session: Session, roles: Iterable[str], site_code: str | None, *, limit: int = 10
) -> list[Alert]:
    """Open expiry warnings whose expiry is still ahead, soonest first (for a countdown)."""
    roles = set(roles)
    statement = (
        select(Alert)
        .where(
            Alert.status == AlertStatus.OPEN.value,
            Alert.kind == AlertKind.EXPIRY_WARNING.value,
            Alert.due_at > utcnow(),
            _addressed_to(roles, site_code, bool(roles & OVERSIGHT_ROLES)),
        )
        .order_by(Alert.due_at, Alert.id)
    )
    seen: set[str] = set()
    result: list[Alert] = []
    # One line per item: an item past two thresholds has two warnings, show it once.
    for alert in session.scalars(statement.limit(limit * 4)):
        if alert.subject_id not in seen:
            seen.add(alert.subject_id)
            result.append(alert)
        if len(result) == limit:
            break
    return result


def countdown(due_at: datetime | None, now: datetime | None = None) -> str:
    """'3 h 12 min' style text until ``due_at`` ('overdue' once passed)."""
    if due_at is None:
        return ""
    left = due_at - (now or utcnow())
    if left <= timedelta(0):
        return "overdue"
    minutes = int(left.total_seconds() // 60)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins} min"
    if minutes:
        return f"{mins} min"
    return f"{int(left.total_seconds())} s"


def _clock_went_backwards(session: Session, seq: int, last_at: str, now_text: str) -> None:
    """The audit trail refused a write: the clock reads earlier than its last event."""
    raise_alert(session, AlertSpec(
        cause=f"clock_went_backwards:{seq}",
        kind="clock_went_backwards",
        severity=Severity.CRITICAL.value,
        subject_type="system",
        subject_id="clock",
        roles=("admin", "qa"),
        message=(f"system clock went backwards: it reads {now_text}, the last audit event "
                 f"({seq}) is at {last_at}; GMP writes are refused until it is corrected"),
    ))


# Registered on import: every application loads this module (its pages, API and the
# accounts' alerts), so the alert is raised wherever audit can refuse a write.
registry.clock_went_backwards.provide("gmp_mes.alerts", _clock_went_backwards)
