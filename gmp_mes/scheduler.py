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
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask
from sqlalchemy import Connection, text

log = logging.getLogger("gmp_mes.scheduler")
LEADER_LOCK_KEY = 7_470_002


class Leadership:
    """Holds the single-active-scheduler lock while this process is the leader."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._connection: Connection | None = None
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._connection is not None or self._file is not None

    def try_acquire(self) -> bool:
        if self.held:
            return True
        db = self.app.extensions["gmp_mes.db"]
        if db.dialect == "postgresql":
            connection = db.engine.connect()
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK_KEY}
            ).scalar()
            connection.commit()
            if got:
                self._connection = connection
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
        return True

    def release(self) -> None:
        if self._connection is not None:
            self._connection.close()  # closing the session releases the advisory lock
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

    def tick(self) -> list[str]:
        """One round: become or stay leader, then run every job in its own transaction."""
        with self._tick_lock:
            if not self.leadership.try_acquire():
                log.info("standing by: another scheduler is active")
                return []
            changes: list[str] = []
            for job in self.app.extensions["gmp_mes.jobs"]:
                try:
                    with self.app.app_context():
                        changes.extend(job(self.app) or [])
                except Exception:  # one failing job must not stop the others or the host
                    log.exception("scheduler job %s failed", getattr(job, "__name__", job))
            for line in changes:
                log.info("%s", line)
            return changes

    def start_background(self) -> None:
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._scheduler.add_job(
            self.tick, "interval", seconds=self.interval, next_run_time=datetime.now(UTC),
            max_instances=1, coalesce=True, id="gmp_mes_tick",
        )
        self._scheduler.start()

    def run_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            self.tick()
            stop.wait(self.interval)

    def stop(self, *_: Any) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        self.leadership.release()
