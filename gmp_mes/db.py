"""Database access: declarative base, UTC column type, engines and sessions.

One boundary owns each transaction (request, CLI command, scheduler job);
services receive a session, flush, and never commit.
"""

from __future__ import annotations

import enum
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, MetaData, Select, create_engine, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

from gmp_mes import deadline
from gmp_mes.deadline import Timeouts, Watchdog

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes only; SQLite would otherwise drop the offset silently."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: GMP time stamps are aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def enum_values(enum_class: type[enum.Enum]) -> list[str]:
    return [member.value for member in enum_class]


def check_in(column: str, enum_class: type[enum.Enum]) -> str:
    """SQL for a CheckConstraint that keeps a status column inside its enum."""
    quoted = ", ".join(f"'{value}'" for value in enum_values(enum_class))
    return f"{column} IN ({quoted})"


class QueuedWriterConnection(sqlite3.Connection):
    """A SQLite connection whose writers queue on an OS file lock.

    SQLite's own busy handler makes a blocked writer sleep and retry with growing
    pauses (up to 100 ms each), so under load some writers wait far longer than
    others. Writers of every thread and process instead take ``<database>-writers.lock``
    with ``flock`` before BEGIN IMMEDIATE and release it after COMMIT or ROLLBACK
    has completed: they wait in the kernel and each is woken as soon as the lock is
    free. The lock is held only inside this application's write transactions, and a
    crashed holder releases it with its process. Other programs that write to the file
    (the sqlite3 shell) still meet SQLite's busy timeout.
    """

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        path = os.fsdecode(database)
        queued = path not in ("", ":memory:") and not path.startswith("file:")
        self._writers_path = os.path.abspath(path)
        self._writers_fd = (
            os.open(path + "-writers.lock", os.O_RDWR | os.O_CREAT, 0o600) if queued else None
        )
        self._holds_writer_lock = False
        self._owner: tuple[str, int] | None = None

    def begin_write(self) -> None:
        """Wait for the writer lock (held until COMMIT or ROLLBACK), then BEGIN IMMEDIATE."""
        if self._writers_fd is not None and not self._holds_writer_lock:
            owner = (self._writers_path, threading.get_ident())
            with _writer_owners_lock:
                if owner in _writer_owners:
                    # Waiting here would wait for ourselves, forever.
                    raise sqlite3.OperationalError(
                        "database is locked: this thread already has a write transaction open")
                _writer_owners.add(owner)
            try:
                fcntl.flock(self._writers_fd, fcntl.LOCK_EX)
            except BaseException:
                _forget_owner(owner)
                raise
            self._holds_writer_lock, self._owner = True, owner
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._release_writer_lock()
            raise

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release_writer_lock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release_writer_lock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release_writer_lock()
            if self._writers_fd is not None:
                os.close(self._writers_fd)
                self._writers_fd = None

    def _release_writer_lock(self) -> None:
        if self._holds_writer_lock and self._writers_fd is not None:
            self._holds_writer_lock = False
            fcntl.flock(self._writers_fd, fcntl.LOCK_UN)
            _forget_owner(self._owner)


# (database path, thread) pairs holding a writer lock: a second write transaction in the
# same thread is refused at once instead of waiting for itself.
_writer_owners: set[tuple[str, int]] = set()
_writer_owners_lock = threading.Lock()


def _forget_owner(owner: tuple[str, int] | None) -> None:
    with _writer_owners_lock:
        _writer_owners.discard(owner)


def _create_private(path: str | None) -> None:
    """The SQLite file holds patients' data: create it 0600 (its -wal and -shm files take
    the same mode from it)."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return  # an existing database keeps the mode its owner gave it
    except FileNotFoundError:
        return  # no such folder: SQLite reports it when connecting


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own is broken).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # GMP records: no durability shortcut, every commit reaches the disk.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
        _mark_sqlite(dbapi_connection)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers take the write lock up front, so a read-then-write transaction
        # never fails half way with SQLITE_BUSY_SNAPSHOT under concurrency.
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode == "NONE":
            return  # one statement, its own implicit transaction (Database.single_read)
        dbapi_connection = connection.connection.dbapi_connection
        if mode == "IMMEDIATE" and isinstance(dbapi_connection, QueuedWriterConnection):
            dbapi_connection.begin_write()
        else:
            connection.exec_driver_sql(f"BEGIN {mode}")


# The application's mark on its own connections (gmp_mes.ddl.application_writes_only):
# triggers refuse changes of identity fields and status columns from any other client.
WRITER_SETTING = "gmp_mes.writer"
WRITER_FUNCTION = "gmp_mes_writer"


def _mark_sqlite(dbapi_connection: Any) -> None:
    dbapi_connection.create_function(WRITER_FUNCTION, 0, lambda: 1, deterministic=True)


def mark_application_connections(engine: Engine) -> None:
    """PostgreSQL: a session setting on every new connection (one round trip per
    connection, none per transaction; needs session pooling, like the advisory locks)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET {WRITER_SETTING} = 'on'")
        dbapi_connection.commit()


class Database:
    """Engine plus two session factories: read (deferred) and write (locks early)."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        echo: bool = False,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.url = url
        self.watchdog: Watchdog | None = None
        if url.startswith("sqlite"):
            _create_private(make_url(url).database)
            self.engine = create_engine(
                url, echo=echo,
                connect_args={"timeout": 30, "factory": QueuedWriterConnection},
            )
            _configure_sqlite(self.engine)
        else:
            # The application passes its configured timeouts (gmp_mes.app); administrative
            # and benchmark engines made without them wait as long as their work takes.
            self.engine = create_engine(
                url, echo=echo, pool_size=pool_size, max_overflow=20, pool_pre_ping=True,
                connect_args=timeouts.connect_args() if timeouts else {},
            )
            mark_application_connections(self.engine)
            if timeouts is not None:
                self.watchdog = deadline.install(self.engine, timeouts)
        self.write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._read = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._write = sessionmaker(bind=self.write_engine, expire_on_commit=False)
        # Copied into every session's ``info`` (the app puts its account policy here,
        # so services, CLI commands and follow-ups all apply the configured limits).
        self.session_info: dict[str, Any] = {}

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self, *, write: bool = True) -> Session:
        session = (self._write if write else self._read)()
        session.info.update(self.session_info)
        return session

    @contextmanager
    def transaction(self, *, actor: Any = None) -> Iterator[Session]:
        """A unit of work: commit at the end, roll back on any exception."""
        session = self.session(write=True)
        if actor is not None:
            session.info["actor"] = actor
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def single_read(self) -> Iterator[Connection]:
        """A connection for one SELECT outside any unit of work. On SQLite no BEGIN is
        sent: a single statement is its own transaction, and so already consistent."""
        with self.engine.connect() as connection:
            if self.dialect == "sqlite":
                connection.execution_options(sqlite_begin="NONE")
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()


def lock_rows(statement: Select[Any], of: Any, *, key_changes: bool = False) -> Select[Any]:
    """``statement`` locking the rows of ``of`` until commit, and re-reading them: the
    session may hold an older copy loaded before the lock was granted.

    On PostgreSQL the lock is ``FOR NO KEY UPDATE`` unless ``key_changes`` (the primary
    key or a referenced unique key is to change): it does not conflict with the
    ``FOR KEY SHARE`` lock a scan's custody INSERT takes on its item through the foreign
    key, so locking a batch's bags never waits for the scanners. Lock order (issue 13):
    row locks first, in a stable order (``ORDER BY`` the key when locking many), the
    audit-chain lock last, at commit (:mod:`gmp_mes.audit`)."""
    return statement.with_for_update(of=of, key_share=not key_changes).execution_options(
        populate_existing=True)


def throwaway_engine(url: str) -> Engine:
    """An engine without pooling, for administrative one-off connections."""
    return create_engine(url, poolclass=NullPool)


# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled
# back whole, so running it again is safe and may succeed.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def is_retryable(error: BaseException) -> bool:
    """A deadlock or serialization failure (a ``DBAPIError`` wrapping it)."""
    return getattr(getattr(error, "orig", None), "sqlstate", None) in RETRYABLE_SQLSTATES
