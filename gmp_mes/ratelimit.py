"""Rate limits on failed passwords (21 CFR 11.300(d)), with the ``limits`` package.

``limits`` ships in-memory, Redis, Memcached, MongoDB and etcd storages. Memory is
per process (each gunicorn worker would count alone) and the others need a server
this product does not otherwise run, so :class:`DatabaseStorage` keeps the
fixed-window counters in the application's own database (table ``rate_limit``): one
atomic upsert per counted failure, shared by every worker and node, on SQLite and
PostgreSQL alike. It is handed the connection of the caller's unit of work, so a
counter moves in the same transaction as the failure it counts.

Time is the application clock (``gmp_mes.clock``), as everywhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from limits import RateLimitItem, parse
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow

if TYPE_CHECKING:
    from flask import Flask

_INCR = text(
    "INSERT INTO rate_limit (key, hits, expires_at) VALUES (:key, :amount, :expires) "
    "ON CONFLICT (key) DO UPDATE SET "
    "hits = CASE WHEN rate_limit.expires_at <= :now THEN :amount "
    "ELSE rate_limit.hits + :amount END, "
    "expires_at = CASE WHEN rate_limit.expires_at <= :now THEN :expires "
    "ELSE rate_limit.expires_at END "
    "RETURNING hits"
)
_GET = text("SELECT hits, expires_at FROM rate_limit WHERE key = :key AND expires_at > :now")
_PURGE = {
    # SKIP LOCKED: the purge never waits for a row a failure is counting on, so it can
    # never be part of a deadlock; rows it skips go at the next sweep.
    "postgresql": text("DELETE FROM rate_limit WHERE key IN (SELECT key FROM rate_limit "
                       "WHERE expires_at <= :now FOR UPDATE SKIP LOCKED)"),
    "sqlite": text("DELETE FROM rate_limit WHERE expires_at <= :now"),
}


def _now() -> float:
    return utcnow().timestamp()


def printable(text: str, limit: int = 100) -> str:
    """A typed name as a key or record: control characters (NUL cannot even be stored by
    PostgreSQL) shown as ``?`` (so it never becomes another, real, user name), lower
    case, bounded."""
    return "".join(ch if ch.isprintable() else "?" for ch in text.strip().lower())[:limit]


class DatabaseStorage(Storage):
    """A ``limits`` storage over one SQLAlchemy connection (fixed windows only)."""

    STORAGE_SCHEME = ["gmp-mes-database"]

    def __init__(self, connection: Connection, **options: Any) -> None:
        super().__init__(None, **options)
        self.connection = connection

    @property
    def base_exceptions(self) -> type[Exception]:
        return DBAPIError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = _now()
        return int(self.connection.execute(
            _INCR, {"key": key, "amount": amount, "expires": now + expiry, "now": now}
        ).scalar_one())

    def get(self, key: str) -> int:
        row = self.connection.execute(_GET, {"key": key, "now": _now()}).first()
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        row = self.connection.execute(_GET, {"key": key, "now": _now()}).first()
        return float(row[1]) if row else _now()

    def check(self) -> bool:
        self.connection.execute(text("SELECT 1"))
        return True

    def reset(self) -> int | None:
        return self.connection.execute(text("DELETE FROM rate_limit")).rowcount

    def clear(self, key: str) -> None:
        self.connection.execute(text("DELETE FROM rate_limit WHERE key = :key"), {"key": key})

    def purge_expired(self) -> int:
        """Delete the counters of windows that ended (an ended window is also reset in
        place by :meth:`incr`, so this only keeps the table small)."""
        statement = _PURGE[self.connection.dialect.name]
        return self.connection.execute(statement, {"now": _now()}).rowcount or 0


@dataclass(frozen=True)
class Limits:
    """The failed-password limits in force: per account (the name typed, known or not,
    so an answer never tells whether a user exists) at each client, and per client.

    The account limit is counted per client so that someone guessing at one workstation
    cannot keep the person out at their own; guesses spread over many clients meet
    each client's limit and the lockout (which counts every client) and its alert."""

    account: RateLimitItem
    client: RateLimitItem

    @classmethod
    def of(cls, account: str, client: str) -> Limits:
        return cls(parse(account), parse(client))

    def _keys(self, username: str, client: str | None) -> list[tuple[str, RateLimitItem, str]]:
        name, where = printable(username), printable(client or "-")
        keys = [("account", self.account, f"account:{name}@{where}")]
        if client:
            keys.append(("client", self.client, f"client:{where}"))
        return keys

    def blocked(self, connection: Connection, username: str, client: str | None) -> int | None:
        """Seconds to wait when a limit is used up, else None (reads, never counts)."""
        limiter = FixedWindowRateLimiter(DatabaseStorage(connection))
        waits = []
        for _, item, key in self._keys(username, client):
            if not limiter.test(item, key):
                reset = limiter.get_window_stats(item, key).reset_time
                waits.append(max(1, math.ceil(reset - _now())))
        return max(waits) if waits else None

    def count_failure(
        self, connection: Connection, username: str, client: str | None
    ) -> tuple[bool, list[str]]:
        """Count one failed password on every limit. Returns whether all were within
        them (the failure may then count toward lockout; one beyond a limit raced the
        check) and the scopes (``account``, ``client``) this failure used up."""
        storage = DatabaseStorage(connection)
        within, exhausted = True, []
        for scope, item, key in self._keys(username, client):
            hits = storage.incr(item.key_for(key), item.get_expiry())
            within = within and hits <= item.amount
            if hits == item.amount:
                exhausted.append(scope)
        return within, exhausted


DEFAULT = Limits.of("3 per 5 minutes", "30 per 5 minutes")


def job(app: Flask) -> list[str]:
    """Scheduler job: drop the counters of ended windows (in a transaction of its own,
    which never waits for a lock)."""
    with app.extensions["gmp_mes.db"].transaction(actor=Actor.system("scheduler")) as s:
        DatabaseStorage(s.connection()).purge_expired()
    return []
