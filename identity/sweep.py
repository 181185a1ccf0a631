"""The item expiry sweep: shelf life, hold time, post-thaw window and expiry warnings.

It lives with the item data (identity) and is set-based SQL, never a loop over ORM
objects, so a sweep over a million items stays one short transaction:

1. one UPDATE moves every item past its ``expires_at`` (or, once thawed, past
   ``thawed_at + post_thaw_window``) from a non-final status to ``expired`` and
   returns what it changed (with the old status, for the audit trail);
2. one SELECT per distinct warning threshold finds the items that crossed it and
   have no alert for it yet;
3. one INSERT of all alert rows (``cause`` is unique: reruns, overlapping sweeps and
   a second node never duplicate one) and one bulk append of the audit events.

Nothing changes twice: an expired item is final, and every alert has its own cause.
A sweep that runs late (after downtime) catches up on everything that fell due.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from flask import Flask
from sqlalchemy import (
    Select,
    String,
    and_,
    case,
    column,
    exists,
    func,
    literal,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.orm import Session

from gmp_mes import alerts, clockwatch
from gmp_mes.alerts import AlertKind, AlertSpec, Severity
from gmp_mes.audit import Actor, Entry
from gmp_mes.clock import utcnow
from gmp_mes.db import UTCDateTime
from gmp_mes.durations import format_duration, parse_duration
from identity.services import KIND_STATUSES, TRANSITIONS

ACTOR = Actor.system("sweep")
EXPIRED = "expired"
THAWED = "thawed"
STARTING_MATERIAL = "starting_material"
FINAL_PRODUCT = "final_product"
# The state machine (identity.services) says which statuses may go to ``expired``: every
# non-final one (SPEC §2). Listed, not negated, so the (status, expires_at) index serves
# the range scans; likewise the kinds that have an ``expired`` status at all.
LIVE_STATUSES = tuple(sorted(str(s) for s, to in TRANSITIONS.items() if EXPIRED in to))
EXPIRING_KINDS = tuple(sorted(str(k) for k, st in KIND_STATUSES.items() if EXPIRED in st))
# How many per-item lines the CLI prints and the scheduler logs before summarising.
MAX_LINES = 100

item = table(
    "item",
    column("item_id", String),
    column("kind", String),
    column("status", String),
    column("coi_id", String),
    column("site_code", String),
    column("expires_at", UTCDateTime),
    column("expiry_warnings", String),
    column("post_thaw_window", String),
    column("thawed_at", UTCDateTime),
)
alert_table = alerts.Alert.__table__


@dataclass
class SweepResult:
    expired: list[tuple[str, str, str, str]] = field(default_factory=list)  # id, kind, was, why
    warnings: list[tuple[str, str]] = field(default_factory=list)  # item id, threshold
    new_alerts: int = 0
    held: clockwatch.Hold | None = None  # expiry postponed: the clock jumped forward

    def lines(self) -> list[str]:
        out: list[str] = [self.held.line()] if self.held else []
        for item_id, kind, was, why in self.expired[:MAX_LINES]:
            label = {"post_thaw": "post-thaw window passed", "hold_time": "hold time passed"}
            out.append(f"expired {item_id} ({kind}, was {was}): {label.get(why, 'shelf life')}")
        if len(self.expired) > MAX_LINES:
            out.append(f"... and {len(self.expired) - MAX_LINES} more items expired")
        for item_id, threshold in self.warnings[:MAX_LINES]:
            out.append(f"expiry warning {item_id}: expires within {threshold}")
        if len(self.warnings) > MAX_LINES:
            out.append(f"... and {len(self.warnings) - MAX_LINES} more expiry warnings")
        if self.expired or self.warnings:
            out.append(
                f"sweep: {len(self.expired)} item(s) expired, {len(self.warnings)} warning(s), "
                f"{self.new_alerts} new alert(s)"
            )
        return out


def job(app: Flask) -> list[str]:
    """Scheduler job (``gmp_mes.app.add_job``): one sweep in its own transaction. Expiry
    is held after a forward clock jump larger than ``clock_jump_minutes`` since the last
    sweep, until an admin confirms the clock (gmp_mes.clockwatch)."""
    step = timedelta(minutes=app.config["GMP_SETTINGS"].clock_jump_minutes)
    with app.extensions["gmp_mes.db"].transaction(actor=ACTOR) as session:
        return sweep(session, clock_step=step).lines()


def sweep(
    session: Session, now: datetime | None = None, *, clock_step: timedelta | None = None
) -> SweepResult:
    """Expire, warn and alert in the caller's transaction (flushes, never commits).

    With ``clock_step``, the run is recorded and expiring (irreversible) waits while the
    clock is held after a forward jump; warnings are still raised (they change nothing)."""
    now = now or utcnow()
    if session.info.get("actor") is None:
        session.info["actor"] = ACTOR
    result = SweepResult()
    if clock_step is not None:
        result.held = clockwatch.observe(session, clockwatch.EXPIRY, now, clock_step)
    windows, thresholds = _distinct_durations(session, now)
    events: list[Entry] = []
    specs: list[AlertSpec] = []
    for row in ([] if result.held else _expire(session, now, windows)):
        item_id, kind, coi_id, site_code, expires_at, was, why = row
        result.expired.append((item_id, kind, was, why))
        events.append(Entry("update", "item", item_id, {"status": was}, {"status": EXPIRED},
                            reason=_REASONS[why]))
        specs.append(_expiry_alert(item_id, kind, coi_id, site_code, expires_at, why))
    for threshold, raw in sorted(thresholds.items()):
        for item_id, kind, coi_id, site_code, expires_at in _crossed(session, now, threshold, raw):
            name = format_duration(threshold)
            result.warnings.append((item_id, name))
            specs.append(_warning_alert(item_id, kind, coi_id, site_code, expires_at, name))
    result.new_alerts = len(alerts.raise_alerts(session, specs, events_before=events))
    return result


_REASONS = {
    "expired": "shelf life ended",
    "hold_time": "starting material hold time ended",
    "post_thaw": "post-thaw window ended",
}


# --- the statements -----------------------------------------------------------------------

IN_PROCESS = "in_process"


def _hold_time_applies() -> Any:
    """SPEC §3: the hold time runs from collection to batch start; a starting material
    its batch has started (in_process until the step that consumes it) no longer expires
    by it (identity.services.hold_time_over)."""
    return ~and_(item.c.kind == STARTING_MATERIAL, item.c.status == IN_PROCESS)


def _not_final() -> Any:
    return and_(item.c.status.in_(LIVE_STATUSES), item.c.kind.in_(EXPIRING_KINDS),
                _hold_time_applies())


def _distinct_durations(
    session: Session, now: datetime
) -> tuple[dict[timedelta, set[str]], dict[timedelta, set[str]]]:
    """The post-thaw windows of thawed items and the warning thresholds of live items,
    as written (one scan; the durations are parsed here, not in SQL)."""
    rows = session.execute(
        select(
            item.c.expiry_warnings,
            case((item.c.status == THAWED, item.c.post_thaw_window), else_=None),
        )
        .where(_not_final(), or_(item.c.expires_at > now, item.c.status == THAWED))
        .distinct()
    )
    windows: dict[timedelta, set[str]] = defaultdict(set)
    thresholds: dict[timedelta, set[str]] = defaultdict(set)
    for row in rows:
        warnings, window = cast("tuple[str | None, str | None]", tuple(row))
        if window:
            duration = _parse(window)
            if duration is not None:
                windows[duration].add(window)
        for raw in (warnings or "").split(","):
            duration = _parse(raw)
            if duration is not None and raw.strip():
                thresholds[duration].add(raw.strip())
    return windows, thresholds


def _parse(raw: str) -> timedelta | None:
    try:
        duration = parse_duration(raw)
    except ValueError:
        return None  # identity validates on entry; an unreadable value never expires anything
    return duration if duration > timedelta(0) else None


def _post_thaw_due(now: datetime, windows: dict[timedelta, set[str]]) -> Any:
    """Thawed at least its own post-thaw window ago (for rows known to be thawed)."""
    if not windows:
        return None
    return and_(
        item.c.thawed_at.is_not(None),
        or_(*(
            and_(item.c.post_thaw_window.in_(sorted(raw)), item.c.thawed_at <= now - window)
            for window, raw in windows.items()
        )),
    )


def _expire(
    session: Session, now: datetime, windows: dict[timedelta, set[str]]
) -> list[tuple[Any, ...]]:
    """One UPDATE ... RETURNING per live status: the old status is then known exactly
    (the WHERE clause is re-checked on the newest row version, so a row whose status a
    concurrent transaction changed is left to the statement of its new status, or to
    the next sweep), each statement is a range scan of the (status, expires_at) index,
    and a concurrent sweep finds the rows already expired."""
    columns = (item.c.item_id, item.c.kind, item.c.coi_id, item.c.site_code, item.c.expires_at)
    rows: list[tuple[Any, ...]] = []
    for status in LIVE_STATUSES:
        post_thaw = _post_thaw_due(now, windows) if status == THAWED else None
        due = item.c.expires_at <= now if post_thaw is None else or_(
            item.c.expires_at <= now, post_thaw
        )
        why = case(
            *([(post_thaw, literal("post_thaw"))] if post_thaw is not None else []),
            (item.c.kind == STARTING_MATERIAL, literal("hold_time")),
            else_=literal("expired"),
        )
        statement = (
            update(item)
            .where(item.c.status == status, item.c.kind.in_(EXPIRING_KINDS), due,
                   *([_hold_time_applies()] if status == IN_PROCESS else []))
            .values(status=EXPIRED)
            .returning(*columns, why)
        )
        rows.extend((*row[:5], status, row[5]) for row in session.execute(statement))
    return rows


def _crossed(
    session: Session, now: datetime, threshold: timedelta, raw: set[str]
) -> list[tuple[Any, ...]]:
    """Live items within ``threshold`` of expiry that have no warning for it yet."""
    cause = literal(f"{AlertKind.EXPIRY_WARNING.value}:") + item.c.item_id + literal(
        f":{format_duration(threshold)}"
    )
    listed = or_(*(
        (literal(",") + func.replace(item.c.expiry_warnings, " ", "") + literal(","))
        .like(f"%,{value.replace(' ', '')},%")
        for value in sorted(raw)
    ))
    statement: Select[Any] = select(
        item.c.item_id, item.c.kind, item.c.coi_id, item.c.site_code, item.c.expires_at
    ).where(
        _not_final(),
        item.c.expires_at > now,
        item.c.expires_at <= now + threshold,
        listed,
        ~exists().where(alert_table.c.cause == cause),
    )
    return [tuple(row) for row in session.execute(statement)]


# --- the alerts ------------------------------------------------------------------------------

def _roles(kind: str) -> tuple[str, ...]:
    if kind == FINAL_PRODUCT:
        return ("qa", "operator", "clinician")
    return ("operator", "qa")


def _expiry_alert(
    item_id: str, kind: str, coi_id: str, site_code: str | None, expires_at: datetime | None,
    why: str,
) -> AlertSpec:
    if why == "post_thaw":
        return AlertSpec(
            cause=f"{AlertKind.POST_THAW_EXCEEDED.value}:{item_id}",
            kind=AlertKind.POST_THAW_EXCEEDED.value, severity=Severity.CRITICAL.value,
            subject_type="item", subject_id=item_id, site_code=site_code, due_at=None,
            roles=("clinician", "qa"),
            message=f"{item_id} (COI {coi_id}) is past its post-thaw window: expired, "
                    "do not administer",
        )
    if why == "hold_time":
        return AlertSpec(
            cause=f"{AlertKind.HOLD_TIME_EXCEEDED.value}:{item_id}",
            kind=AlertKind.HOLD_TIME_EXCEEDED.value, severity=Severity.CRITICAL.value,
            subject_type="item", subject_id=item_id, site_code=site_code, due_at=expires_at,
            roles=("operator", "qa"),
            message=f"starting material {item_id} (COI {coi_id}) is past its hold time: expired",
        )
    return AlertSpec(
        cause=f"{AlertKind.EXPIRED.value}:{item_id}",
        kind=AlertKind.EXPIRED.value,
        severity=(Severity.CRITICAL if kind == FINAL_PRODUCT else Severity.MAJOR).value,
        subject_type="item", subject_id=item_id, site_code=site_code, due_at=expires_at,
        roles=_roles(kind),
        message=f"{kind.replace('_', ' ')} {item_id} (COI {coi_id}) has expired",
    )


def _warning_alert(
    item_id: str, kind: str, coi_id: str, site_code: str | None, expires_at: datetime,
    threshold: str,
) -> AlertSpec:
    what = "hold time ends" if kind == STARTING_MATERIAL else "expires"
    return AlertSpec(
        cause=f"{AlertKind.EXPIRY_WARNING.value}:{item_id}:{threshold}",
        kind=AlertKind.EXPIRY_WARNING.value, severity=Severity.WARNING.value,
        subject_type="item", subject_id=item_id, site_code=site_code, due_at=expires_at,
        roles=_roles(kind),
        message=f"{kind.replace('_', ' ')} {item_id} (COI {coi_id}) {what} at "
                f"{expires_at:%Y-%m-%d %H:%M} UTC (warning {threshold} before)",
    )
