"""SQLite writers queue on an OS file lock (gmp_mes.db.QueuedWriterConnection)."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from gmp_mes.db import Database, QueuedWriterConnection


def _lock_is_free(database: Path) -> bool:
    """Whether another open file description can take the writer lock right now."""
    fd = os.open(f"{database}-writers.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'w.sqlite'}")
    with db.engine.begin() as c:
        c.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
        c.execute(text("INSERT INTO counter VALUES (0)"))
    yield db
    db.dispose()


def test_a_write_transaction_holds_the_lock_until_commit(sqlite_db: Database,
                                                         tmp_path: Path) -> None:
    database = tmp_path / "w.sqlite"
    with sqlite_db.session() as session:
        session.execute(text("UPDATE counter SET n = n + 1"))
        assert not _lock_is_free(database)
        session.commit()
        assert _lock_is_free(database)


def test_rollback_releases_the_lock(sqlite_db: Database, tmp_path: Path) -> None:
    database = tmp_path / "w.sqlite"
    with sqlite_db.session() as session:
        session.execute(text("UPDATE counter SET n = n + 1"))
        session.rollback()
        assert _lock_is_free(database)
        # The same thread can at once write in a new transaction (a failed form's follow-up).
        with sqlite_db.transaction() as follow_up:
            follow_up.execute(text("UPDATE counter SET n = n + 10"))
    with sqlite_db.engine.connect() as c:
        assert c.execute(text("SELECT n FROM counter")).scalar_one() == 10


def test_a_second_write_transaction_in_the_same_thread_fails_at_once(
        sqlite_db: Database) -> None:
    """It would wait for its own thread forever: refused with a clear error instead."""
    with sqlite_db.session() as outer:
        outer.execute(text("UPDATE counter SET n = n + 1"))
        with (pytest.raises(sqlite3.OperationalError, match="already has a write transaction"),
              sqlite_db.transaction() as inner):
            inner.execute(text("UPDATE counter SET n = n + 1"))
        outer.commit()
    with sqlite_db.transaction() as after:  # and nothing is left held
        after.execute(text("UPDATE counter SET n = n + 1"))
    with sqlite_db.engine.connect() as c:
        assert c.execute(text("SELECT n FROM counter")).scalar_one() == 2


def test_readers_do_not_take_the_lock(sqlite_db: Database, tmp_path: Path) -> None:
    with sqlite_db.session(write=False) as session:
        session.execute(text("SELECT n FROM counter")).scalar_one()
        assert _lock_is_free(tmp_path / "w.sqlite")


def test_a_failed_begin_releases_the_lock(tmp_path: Path) -> None:
    """Another program holding SQLite's own lock: BEGIN times out, the queue moves on."""
    database = tmp_path / "w.sqlite"
    foreign = sqlite3.connect(database, isolation_level=None)
    foreign.execute("CREATE TABLE t (x)")
    foreign.execute("BEGIN IMMEDIATE")
    queued = sqlite3.connect(database, timeout=0.05, factory=QueuedWriterConnection,
                             isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            queued.begin_write()
        assert _lock_is_free(database)
    finally:
        foreign.execute("ROLLBACK")
        foreign.close()
        queued.close()


def _add_many(url: str, times: int) -> None:
    db = Database(url)
    for _ in range(times):
        with db.transaction() as session:
            n = session.execute(text("SELECT n FROM counter")).scalar_one()
            session.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
    db.dispose()


def test_threads_and_processes_never_lose_an_update(sqlite_db: Database) -> None:
    """Read-then-write increments from 4 threads and 2 processes: none is lost, none fails."""
    url = sqlite_db.url
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_add_many, args=(url, 50)) for _ in range(2)]
    threads = [threading.Thread(target=_add_many, args=(url, 50)) for _ in range(4)]
    for worker in (*processes, *threads):
        worker.start()
    for worker in (*processes, *threads):
        worker.join(timeout=120)
    assert all(p.exitcode == 0 for p in processes)
    with sqlite_db.engine.connect() as c:
        assert c.execute(text("SELECT n FROM counter")).scalar_one() == 300
