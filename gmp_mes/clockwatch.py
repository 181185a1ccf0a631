"""Irreversible actions taken on time wait when the clock jumped forward.

A periodic job that acts because a time has passed (the expiry sweep expires
products, and an expired product is final) trusts the clock. If the clock jumped
forward (a wrong NTP source, a hand-set clock, a VM restored with a future time),
the job would act irreversibly on a time that never came. So such a job records
the time of each of its runs here; when the clock moved forward by more than the
configured step (``clock_jump_minutes``) since the last run, its irreversible
actions are *held*: not taken, an alert raised to admins and QA, and the hold
lasts until an admin confirms the clock (``gmp-mes clock confirm --reason ...``).
A long downtime looks the same as a jump and is held the same way: after it, a
person confirms that the time is right before products are expired in bulk.

Detection and confirmation are audit events; the per-run time stamp itself is
bookkeeping (not an audited record: a sweep every minute would fill the trail).
EU GMP Annex 11 §12.4 / 21 CFR 11.10(a): actions of the system at the right time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from gmp_mes import alerts, audit
from gmp_mes.audit import format_time
from gmp_mes.clock import utcnow
from gmp_mes.db import Base, UTCDateTime, lock_rows
from gmp_mes.errors import conflict

EXPIRY = "expiry_sweep"


class ClockWatch(Base):
    __tablename__ = "clock_watch"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    last_run_at: Mapped[datetime] = mapped_column(UTCDateTime)
    held_since: Mapped[datetime | None] = mapped_column(UTCDateTime)  # jump seen, not confirmed
    jump_from: Mapped[datetime | None] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class Hold:
    name: str
    since: datetime
    jump_from: datetime

    def line(self) -> str:
        return (f"{self.name}: irreversible actions held since {format_time(self.since)}: the "
                f"clock jumped forward from {format_time(self.jump_from)}; confirm the time "
                f"with `gmp-mes clock confirm {self.name} --reason ...`")


def observe(session: Session, name: str, now: datetime, max_step: timedelta) -> Hold | None:
    """Record a run of job ``name`` at ``now``; a :class:`Hold` while its irreversible
    actions must wait (a forward jump seen now or earlier and not yet confirmed)."""
    row = session.scalar(lock_rows(select(ClockWatch).where(ClockWatch.name == name),
                                   ClockWatch))
    if row is None:
        session.add(ClockWatch(name=name, last_run_at=now))
        session.flush()
        return None
    if row.held_since is not None:
        assert row.jump_from is not None
        return Hold(name, row.held_since, row.jump_from)
    if now < row.last_run_at:
        return None  # a backward step: audit writes refuse it; the mark stays where it was
    if now - row.last_run_at > max_step:
        row.held_since, row.jump_from = now, row.last_run_at
        session.flush()
        audit.record(session, "clock_jump_held", "clock_watch", name,
                     old={"last_run_at": row.jump_from},
                     new={"held_since": now, "step": str(now - row.jump_from),
                          "max_step": str(max_step)})
        alerts.raise_alert(session, alerts.AlertSpec(
            cause=f"clock_jumped:{name}:{format_time(now)}",
            kind="clock_jumped",
            severity=alerts.Severity.CRITICAL.value,
            subject_type="system",
            subject_id=name,
            roles=("admin", "qa"),
            message=(f"the clock moved forward {now - row.jump_from} since the last {name} run "
                     f"(more than {max_step}): irreversible actions (expiring products) are "
                     f"held until an admin confirms the time with `gmp-mes clock confirm {name}`"),
        ))
        return Hold(name, now, row.jump_from)
    row.last_run_at = now
    session.flush()
    return None


def confirm(session: Session, name: str, reason: str) -> datetime:
    """An admin confirms that the clock is right: the held job acts again from its next run.
    Returns the time the hold began."""
    if not reason.strip():
        raise conflict("reason_required", "a reason is required to confirm the clock")
    row = session.scalar(lock_rows(select(ClockWatch).where(ClockWatch.name == name),
                                   ClockWatch))
    if row is None or row.held_since is None:
        raise conflict("not_held", f"{name} is not held: nothing to confirm")
    since = row.held_since
    now = utcnow()
    with audit.reason(session, reason.strip()):
        audit.record(session, "clock_jump_confirmed", "clock_watch", name,
                     old={"held_since": since, "jump_from": row.jump_from},
                     new={"confirmed_at": now})
        row.held_since, row.jump_from, row.last_run_at = None, None, now
    session.flush()
    return since


def holds(session: Session) -> list[Hold]:
    rows = session.scalars(select(ClockWatch).where(ClockWatch.held_since.is_not(None)))
    return [Hold(r.name, r.held_since, r.jump_from) for r in rows if r.held_since and r.jump_from]
