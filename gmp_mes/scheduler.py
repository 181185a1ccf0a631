"""Scheduler host: runs the domains' periodic jobs on exactly one node.

Never started by ``create_app`` (every gunicorn worker would start one): only
``gmp-mes serve`` (in-process) and ``gmp-mes scheduler`` (alone) start it.
Leadership is a PostgreSQL session advisory lock, or a file lock on SQLite;
standbys retry every interval and take over when the leader's lock goes with
its process. The first tick runs at once, so whatever expired while the system
was down is caught on start.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from gmp_mes.audit import Actor
from gmp_mes.errors import DomainError
from gmp_mes.notify import Notifier

log = logging.getLogger("gmp_mes.scheduler")
LEADER_LOCK_KEY = 7_470_002

# A job is ``job(app) -> list[str]``: it opens and commits its own transaction(s) and
# returns one line per change it made (printed by ``gmp-mes sweep``, logged otherwise).
Job = Callable[[Flask], list[str]]


@dataclass
class RunResult:
    changes: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def job_name(job: Any) -> str:
    return f"{getattr(job, '__module__', '?')}.{getattr(job, '__name__', repr(job))}"


def run_jobs(app: Flask) -> RunResult:
    """Run every registered job once, each in its own transaction; one failing job
    neither stops the others nor undoes what they committed."""
    from gmp_mes.db import is_retryable

    result = RunResult()
    for job in app.extensions["gmp_mes.jobs"]:
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


class Leadership:
    """Holds the single-active-scheduler lock while this process is the leader."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._connection: Connection | None = None
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._connection is not None or self._file is not None

    def _still_held(self) -> bool:
        """On PostgreSQL the lock lives as long as its connection: if the database
        restarted or the connection broke, the lock is gone and another node may lead."""
        if self._connection is None:
            return self._file is not None
        try:
            held = self._connection.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid() AND classid = 0 AND objid = :key "
                    "AND objsubid = 1 AND granted)"
                ),
                {"key": LEADER_LOCK_KEY},
            ).scalar()
            self._connection.commit()
        except SQLAlchemyError:
            held = False
        if not held:
            log.warning("scheduler leadership lost (database connection gone)")
            self.release()
        return bool(held)

    def try_acquire(self) -> bool:
        if self.held and self._still_held():
            return True
        db = self.app.extensions["gmp_mes.db"]
        if db.dialect == "postgresql":
            connection = db.engine.connect()
            try:
                got = connection.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK_KEY}
                ).scalar()
                connection.commit()
            except DBAPIError:
                connection.invalidate()
                connection.close()
                log.warning("scheduler: database unreachable, cannot take leadership")
                return False
            if got:
                self._connection = connection
                log.info("this process (pid %s) is now the active scheduler", os.getpid())
            else:
                connection.close()
            return bool(got)
        path = Path(self.app.config["GMP_SETTINGS"].instance_path) / "scheduler.lock"
        handle = path.open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        log.info("this process (pid %s) is now the active scheduler", os.getpid())
        return True

    def release(self) -> None:
        if self._connection is not None:
            try:  # hand over at once on a clean stop (a closing session frees it a bit later)
                self._connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": LEADER_LOCK_KEY}
                )
                self._connection.commit()
            except SQLAlchemyError:
                log.warning("scheduler: could not unlock cleanly; the closing session frees it")
            # Invalidate, not just close: a closed connection goes back to the pool
            # with its session-level advisory lock still held.
            self._connection.invalidate()
            self._connection.close()
            self._connection = None
        if self._file is not None:
            self._file.close()
            self._file = None


class SchedulerHost:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.leadership = Leadership(app)
        self.interval = app.config["GMP_SETTINGS"].sweep_seconds
        self._scheduler: BackgroundScheduler | None = None
        self._tick_lock = threading.Lock()
        self.notifier = Notifier(app, lambda: self.leadership.held, float(self.interval))

    def tick(self) -> list[str]:
        """One round: become or stay leader, then run every job in its own transaction,
        then wake the deliverer (alerts are sent after they were committed)."""
        with self._tick_lock:
            if not self.leadership.try_acquire():
                log.info("standing by (pid %s): another scheduler is active", os.getpid())
                return []
            result = run_jobs(self.app)
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
        while not stop.is_set():
            try:
                self.tick()
            except DBAPIError:  # database away: stand by and try again next interval
                log.exception("scheduler round failed")
            stop.wait(self.interval)

    def stop(self, *_: Any) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        self.notifier.stop()
        self.leadership.release()
