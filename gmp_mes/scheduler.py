"""Scheduler host: runs the domains' periodic jobs on exactly one node.

Never started by ``create_app`` (every gunicorn worker would start one): only
``gmp-mes serve`` (in-process) and ``gmp-mes scheduler`` (alone) start it.
Leadership is a lease in the database that the leader renews (see
:class:`Leadership`); standbys retry every interval and take over when the
lease lapses: the leader died, stopped, or was partitioned from the database.
The first tick runs at once, so whatever expired while the system was down is
caught on start.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from gmp_mes import registry
from gmp_mes.audit import Actor
from gmp_mes.db import is_retryable
from gmp_mes.errors import DomainError
from gmp_mes.notify import Notifier

log = logging.getLogger("gmp_mes.scheduler")

# A job is ``job(app) -> list[str]``: it opens and commits its own transaction(s) and
# returns one line per change it made (printed by ``gmp-mes sweep``, logged otherwise).
Job = Callable[[Flask], list[str]]


@dataclass
class RunResult:
    changes: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def job_name(job: Any) -> str:
    return f"{getattr(job, '__module__', '?')}.{getattr(job, '__name__', repr(job))}"


def run_jobs(app: Flask, still_leader: Callable[[], bool] | None = None) -> RunResult:
    """Run every registered job once, each in its own transaction; one failing job
    neither stops the others nor undoes what they committed. With ``still_leader``, the
    round stops as soon as this process may no longer lead (its lease lapsed)."""
    result = RunResult()
    for job in registry.of(app).jobs:
        if still_leader is not None and not still_leader():
            log.warning("scheduler lease lapsed: sweep stopped before %s", job_name(job))
            result.failed.append(job_name(job))
            break
        try:
            with app.app_context():
                try:
                    changes = job(app) or []
                except DBAPIError as error:
                    if not is_retryable(error):
                        raise
                    # A deadlock or serialization failure undid the job's transaction
                    # whole: run it once more.
                    log.warning("scheduler job %s: concurrent update, running it once more",
                                job_name(job))
                    changes = job(app) or []
                result.changes.extend(changes)
        except DomainError as exc:  # e.g. clock_went_backwards: its alert must still be kept
            log.error("scheduler job %s refused: %s", job_name(job), exc.detail)
            result.failed.append(job_name(job))
            _run_follow_up(app, exc)
        except Exception:  # reported (logged and returned), never silently dropped
            log.exception("scheduler job %s failed", job_name(job))
            result.failed.append(job_name(job))
    return result


def _run_follow_up(app: Flask, error: DomainError) -> None:
    if error.follow_up is None:
        return
    try:
        with app.extensions["gmp_mes.db"].transaction(actor=Actor.system("security")) as s:
            error.follow_up(s)
    except Exception:  # logged: the job's own failure is already reported
        log.exception("follow-up of a refused scheduler job failed")


def _db_epoch(dialect: str) -> str:
    """SQL for the database's clock in seconds since the epoch: every node reads the same
    clock, so a node whose own clock is off never takes a lease that is still held."""
    if dialect == "postgresql":
        return "EXTRACT(EPOCH FROM clock_timestamp())::float8"
    return "(julianday('now') - 2440587.5) * 86400.0"


class Leadership:
    """Leadership as a lease in the database that the leader must renew.

    The lease (table ``scheduler_lease``) runs ``ttl`` seconds by the database's clock
    from its last renewal. The leader renews it every tick and, between ticks, every
    ``ttl / 3`` from a thread of its own; a standby takes it over at its first tick after
    it lapsed, so within two intervals of the leader's last renewal. The leader keeps
    its own bound by its monotonic clock, from the moment it *sent* the renewal: when a
    renewal does not come back (the database is partitioned away, the connection black
    holed), it stops running jobs when that bound passes, before any standby can have
    taken over. A lock held by a database session (the advisory lock used before)
    cannot do this: a partitioned leader's session, and so its lock, lives on at the
    server for as long as TCP keepalives let it.
    """

    NAME = "scheduler"

    def __init__(self, app: Flask, ttl: float | None = None) -> None:
        self.app = app
        self.ttl = float(ttl or app.config["GMP_SETTINGS"].sweep_seconds)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:120]
        self._valid_until = 0.0  # time.monotonic() bound of the lease this process holds
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    def try_acquire(self) -> bool:
        """Take or renew the lease; False when another holds it or the database does not
        answer (then this process stops leading when its own bound passes)."""
        db = self.app.extensions["gmp_mes.db"]
        with self._lock:
            sent = time.monotonic()
            try:
                got = self._take(db)
            except SQLAlchemyError as exc:
                log.warning("scheduler: cannot renew the lease (%s)", type(exc).__name__)
                if self.held:
                    log.warning("scheduler leadership lost (lease not renewed)")
                self._valid_until = 0.0
                return False
            was_held = self.held
            self._valid_until = sent + self.ttl if got else 0.0
            if got and not was_held:
                log.info("this process (pid %s) is now the active scheduler", os.getpid())
            elif was_held and not got:
                log.warning("scheduler leadership lost (the lease was taken over)")
            return got

    def _take(self, db: Any) -> bool:
        epoch = _db_epoch(db.dialect)
        lock = " FOR UPDATE" if db.dialect == "postgresql" else ""
        with db.write_engine.begin() as c:
            row = c.execute(
                text(f"SELECT holder, expires_at, {epoch} FROM scheduler_lease "
                     f"WHERE name = :n{lock}"),
                {"n": self.NAME},
            ).one()
            holder, expires_at, now = row[0], float(row[1]), float(row[2])
            if holder != self.holder and expires_at > now:
                return False
            c.execute(
                text("UPDATE scheduler_lease SET holder = :h, expires_at = :e, "
                     "renewed_at = :r WHERE name = :n"),
                {"h": self.holder, "e": now + self.ttl, "r": now, "n": self.NAME},
            )
        return True

    def release(self) -> None:
        """Hand over at once on a clean stop: the lease ends now."""
        with self._lock:
            if not self.held:
                return
            self._valid_until = 0.0
            db = self.app.extensions["gmp_mes.db"]
            try:
                with db.write_engine.begin() as c:
                    c.execute(
                        text(f"UPDATE scheduler_lease SET expires_at = {_db_epoch(db.dialect)} "
                             "WHERE name = :n AND holder = :h"),
                        {"n": self.NAME, "h": self.holder},
                    )
            except SQLAlchemyError:
                log.warning("scheduler: could not end the lease; it lapses after %ss", self.ttl)


class SchedulerHost:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.leadership = Leadership(app)
        self.interval = app.config["GMP_SETTINGS"].sweep_seconds
        self._scheduler: BackgroundScheduler | None = None
        self._tick_lock = threading.Lock()
        self._stopping = threading.Event()
        self._renewer: threading.Thread | None = None
        self.notifier = Notifier(app, lambda: self.leadership.held, float(self.interval))

    def _renew_while_leading(self) -> None:
        """Renew the lease every third of its term, so a long sweep never lets it lapse."""
        while not self._stopping.wait(max(self.leadership.ttl / 3, 0.2)):
            if self.leadership.held:
                self.leadership.try_acquire()

    def _start_renewer(self) -> None:
        self._stopping.clear()
        self._renewer = threading.Thread(
            target=self._renew_while_leading, name="gmp-mes-lease", daemon=True
        )
        self._renewer.start()

    def tick(self) -> list[str]:
        """One round: become or stay leader, then run every job in its own transaction,
        then wake the deliverer (alerts are sent after they were committed)."""
        with self._tick_lock:
            if not self.leadership.try_acquire():
                log.info("standing by (pid %s): another scheduler is active", os.getpid())
                return []
            result = run_jobs(self.app, still_leader=lambda: self.leadership.held)
            for line in result.changes:
                log.info("%s", line)
            log.info(
                "sweep done by active scheduler (pid %s): %d change(s)%s",
                os.getpid(),
                len(result.changes),
                f", failed jobs: {', '.join(result.failed)}" if result.failed else "",
            )
            self.notifier.kick()
            return result.changes

    def start_background(self) -> None:
        self.notifier.start()
        self._start_renewer()
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._scheduler.add_job(
            self.tick,
            "interval",
            seconds=self.interval,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            id="gmp_mes_tick",
        )
        self._scheduler.start()

    def run_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        self.notifier.start()
        self._start_renewer()
        while not stop.is_set():
            try:
                self.tick()
            except SQLAlchemyError:  # database away: stand by and try again next interval
                log.exception("scheduler round failed")
            stop.wait(self.interval)

    def stop(self, *_: Any) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        self._stopping.set()
        self.notifier.stop()
        self.leadership.release()
