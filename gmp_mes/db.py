"""Database access: declarative base, UTC column type, engines and sessions.

One boundary owns each transaction (request, CLI command, scheduler job);
services receive a session, flush, and never commit.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

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

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers take the write lock up front, so a read-then-write transaction
        # never fails half way with SQLITE_BUSY_SNAPSHOT under concurrency.
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """Engine plus two session factories: read (deferred) and write (locks early)."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        if url.startswith("sqlite"):
            self.engine = create_engine(url, echo=echo, connect_args={"timeout": 30})
            _configure_sqlite(self.engine)
        else:
            self.engine = create_engine(
                url, echo=echo, pool_size=pool_size, max_overflow=20, pool_pre_ping=True
            )
        self.write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._read = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._write = sessionmaker(bind=self.write_engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self, *, write: bool = True) -> Session:
        return (self._write if write else self._read)()

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

    def dispose(self) -> None:
        self.engine.dispose()


def throwaway_engine(url: str) -> Engine:
    """An engine without pooling, for administrative one-off connections."""
    return create_engine(url, poolclass=NullPool)
