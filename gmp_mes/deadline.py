"""Timeouts on PostgreSQL: nothing waits for the database without a bound.

Server side, every session gets ``statement_timeout`` and ``lock_timeout``; the
socket gets TCP keepalives and ``tcp_user_timeout``; connecting is bounded by
``connect_timeout``. None of these helps when the path to the server still accepts
bytes but nothing comes back (a network black hole, a stalled proxy or NAT box):
the kernel keeps acknowledging and the client would wait forever. So the client
keeps its own deadline too: every round trip (statement, commit, rollback, the
pool's ping) is watched, and a round trip still waiting after ``network_timeout``
seconds has its socket shut down. The driver then fails with a disconnect,
SQLAlchemy drops the connection, and the HTTP edge answers 503 problem+json.

``budget(seconds)`` shortens the deadline for one block (``/healthz`` answers
within its own bound).
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger("gmp_mes.db")
# The monotonic time by which the current block's round trips must end (``budget``).
_budget: contextvars.ContextVar[float | None] = contextvars.ContextVar("db_until", default=None)


@dataclass(frozen=True)
class Timeouts:
    """PostgreSQL timeouts in seconds; 0 turns one off."""

    connect: int = 5
    statement: int = 30
    lock: int = 10
    network: int = 35
    keepalives_idle: int = 15

    def connect_args(self) -> dict[str, Any]:
        """libpq connection parameters (``connect_timeout``, keepalives, ``options``)."""
        args: dict[str, Any] = {}
        if self.connect:
            args["connect_timeout"] = self.connect
        if self.keepalives_idle:
            args.update(
                keepalives=1,
                keepalives_idle=self.keepalives_idle,
                keepalives_interval=max(1, self.keepalives_idle // 3),
                keepalives_count=3,
                # Unacknowledged data (a cable pulled mid-request) fails after this long.
                tcp_user_timeout=(self.network or self.keepalives_idle * 2) * 1000,
            )
        options = []
        if self.statement:
            options.append(f"-c statement_timeout={self.statement * 1000}")
        if self.lock:
            options.append(f"-c lock_timeout={self.lock * 1000}")
        if options:
            args["options"] = " ".join(options)
        return args


@contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Within the block, database round trips stop ``seconds`` from now (or at the
    configured bounds, when shorter). Connecting takes at least 2 s (libpq's minimum)."""
    token = _budget.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _budget.reset(token)


@contextmanager
def unbounded() -> Iterator[None]:
    """No client-side deadline within the block (a schema migration, a long maintenance
    command that was started on purpose); the server-side timeouts still apply unless
    the block lifts them for its own transaction."""
    token = _budget.set(math.inf)
    try:
        yield
    finally:
        _budget.reset(token)


class Watchdog:
    """One thread per engine that shuts down the socket of a round trip past its deadline."""

    def __init__(self, network_timeout: float) -> None:
        self.network_timeout = network_timeout
        self._armed: dict[int, tuple[float, int]] = {}
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._ids = iter(range(1, 1 << 62))
        self._wake_at = math.inf  # when the watchdog thread next looks (under _lock)
        self.fired = 0

    def _limit(self, cap: float | None) -> float | None:
        until = _budget.get()
        if until == math.inf:
            return None
        limits = [x for x in (self.network_timeout or None, cap,
                              None if until is None else max(0.05, until - time.monotonic()))
                  if x]
        return min(limits) if limits else None

    @contextmanager
    def watch(self, fileno: int, cap: float | None = None) -> Iterator[None]:
        """Watch one round trip on socket ``fileno`` (at most ``cap`` seconds, if given)."""
        limit = self._limit(cap)
        if limit is None or fileno < 0:
            yield
            return
        with self._lock:
            key = next(self._ids)
            due = time.monotonic() + limit
            self._armed[key] = (due, fileno)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="gmp-mes-db-watchdog", daemon=True
                )
                self._thread.start()
            elif due < self._wake_at:
                # Wake the thread only when this deadline comes before its next look
                # (rarely: the limits are equal, so later round trips end later).
                self._lock.notify()
        try:
            yield
        finally:
            with self._lock:
                self._armed.pop(key, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                due = [k for k, (at, _fd) in self._armed.items() if at <= now]
                for key in due:
                    # Cut while holding the lock: the watched call's ``finally`` waits for
                    # it, so the connection (and its fd number) is still the one watched.
                    self._cut(self._armed.pop(key)[1])
                wait = max(0.01, min(
                    min((at for at, _ in self._armed.values()), default=now + 30) - now, 30))
                self._wake_at = now + wait
                self._lock.wait(wait)
                self._wake_at = math.inf

    def _cut(self, fd: int) -> None:
        """Shut the socket down (the driver's fd stays open, so it cannot be reused by
        another connection meanwhile): the waiting driver call fails as a disconnect."""
        self.fired += 1
        try:
            dup = os.dup(fd)
        except OSError:
            return  # already closed: nothing is waiting on it any more
        try:
            with socket.socket(fileno=dup) as s:
                s.shutdown(socket.SHUT_RDWR)
        except OSError as exc:
            log.warning("database watchdog could not shut a socket down: %s", exc)
            return
        log.error("database did not answer within its deadline: connection cut")


def _fileno(connection: Any) -> int:
    try:
        return int(connection.fileno())
    except Exception:  # a closed or broken connection has no socket to watch
        return -1


def install(engine: Engine, timeouts: Timeouts) -> Watchdog:
    """Bound every round trip of ``engine`` (a PostgreSQL engine)."""
    dog = Watchdog(timeouts.network)
    dialect = engine.dialect

    def on_connection(method: Callable[..., Any], cap: float | None = None) -> Callable[..., Any]:
        def guarded(connection: Any, *args: Any, **kwargs: Any) -> Any:
            with dog.watch(_fileno(connection), cap):
                return method(connection, *args, **kwargs)

        return guarded

    def on_cursor(method: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(cursor: Any, *args: Any, **kwargs: Any) -> Any:
            with dog.watch(_fileno(cursor.connection)):
                return method(cursor, *args, **kwargs)

        return guarded

    # The pool's ping is a ``SELECT 1`` on an idle connection: if it does not come back
    # within the connect timeout the connection is dead, and a fresh one is tried at once.
    # (setattr like the loops below: the dialect's methods are replaced on purpose.)
    ping = on_connection(dialect.do_ping, timeouts.connect or None)
    setattr(dialect, "do_ping", ping)  # noqa: B010
    for name in ("do_commit", "do_rollback"):
        setattr(dialect, name, on_connection(getattr(dialect, name)))
    for name in ("do_execute", "do_execute_no_params", "do_executemany"):
        setattr(dialect, name, on_cursor(getattr(dialect, name)))

    @event.listens_for(engine, "do_connect")
    def _bounded_connect(_dialect: Any, _record: Any, _cargs: Any, cparams: dict) -> None:
        until = _budget.get()
        if until is not None and until != math.inf:
            limit = until - time.monotonic()
            configured = cparams.get("connect_timeout") or math.inf
            # libpq treats anything under 2 s as 2 s.
            cparams["connect_timeout"] = max(2, math.ceil(min(configured, limit)))

    return dog
