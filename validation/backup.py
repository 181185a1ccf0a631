"""Consistent online backup and restore (EU GMP Annex 11 §7.2, 21 CFR 11.10(c)).

Found by fault tests: sqlite3's ``.backup`` never finishes while the application writes
(each write restarts it), a plain copy of the file lost acknowledged writes while
``audit verify`` still said intact, and a PostgreSQL dump restored into a new instance
folder let ``gmp-mes init`` silently make a new signing key, so every label failed as
forged. Hence:

* SQLite: the backup API in steps of pages, while this backup holds the writer lock
  (``<database>-writers.lock`` and BEGIN IMMEDIATE on a second connection): the
  application's writers queue for the few seconds it takes, readers go on, and the copy
  is the state after the last committed write.
* PostgreSQL: ``pg_dump`` in the custom format on a snapshot exported by a REPEATABLE READ
  transaction that also reads the audit head and the label key ids, so the description
  in the backup is of exactly the dumped data.
* The backup is a ZIP with ``backup.json`` (what it is: dialect, time, audit head, event
  count, schema revisions, the ids of the keys that signed its labels, SHA-256 of the
  database file; signed with the installation key) and the database file.
* Restore goes only into an empty database, then recomputes the audit chain and checks
  it ends at the recorded head.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.engine import URL, make_url

from gmp_mes import audit
from gmp_mes.clock import utcnow
from gmp_mes.db import Database, QueuedWriterConnection
from labels import services as labels
from labels.services import SigningKeyUnavailable
from validation import signing

FORMAT = "gmp-mes backup 1"
DESCRIPTION = "backup.json"
SQLITE_PAYLOAD = "database.sqlite"
PG_PAYLOAD = "database.pgdump"
PAGES_PER_STEP = 1024
Progress = Callable[[int, int], None]  # (done, total)


class BackupError(Exception):
    """Backup or restore refused or failed; the message says why (one line)."""


@dataclass(frozen=True)
class Restored:
    events: int
    head: str | None
    label_key_ids: list[str]
    missing_keys: list[str]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(connection: Connection) -> dict[str, Any]:
    """What a backup holds, read in the transaction (snapshot) that is backed up."""
    head = audit.head(connection)
    from sqlalchemy.orm import Session

    with Session(bind=connection) as session:  # same connection: same snapshot
        key_ids = sorted(labels.signing_key_ids(session))
    revisions = sorted(r[0] for r in connection.execute(
        text("SELECT version_num FROM alembic_version")))
    return {
        "audit_head": str(head) if head else None,
        "audit_events": audit.count_events(connection),
        "label_key_ids": key_ids,
        "schema_revisions": revisions,
    }


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


@contextmanager
def _writers_held(path: Path) -> Iterator[None]:
    """The application's writer lock plus SQLite's own write lock, on a connection of
    their own: no write, by this application or another program, changes the file."""
    holder = sqlite3.connect(path, timeout=30, factory=QueuedWriterConnection,
                             isolation_level=None)
    try:
        holder.begin_write()
        try:
            yield
        finally:
            holder.rollback()
    finally:
        holder.close()


def _sqlite_backup(url: str, target: Path, progress: Progress | None) -> dict[str, Any]:
    path = _sqlite_path(url)
    if not path.exists():
        raise BackupError(f"no database at {path}")
    try:
        with _writers_held(path):
            source = sqlite3.connect(path, timeout=30)
            destination = sqlite3.connect(target)
            try:
                source.backup(destination, pages=PAGES_PER_STEP,
                              progress=(lambda _s, left, total: progress(total - left, total))
                              if progress else None)
            finally:
                destination.close()
                source.close()
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite backup of {path} failed: {exc}") from exc
    copy = Database(f"sqlite:///{target}")
    try:
        with copy.engine.connect() as connection:
            return describe(connection)
    finally:
        copy.dispose()


def libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URI without the password, and the environment carrying it."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = URL.create("postgresql", username=parsed.username, host=parsed.host,
                       port=parsed.port, database=parsed.database, query=parsed.query)
    return plain.render_as_string(hide_password=False), env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found: install the PostgreSQL client tools "
                          f"(Debian: apt-get install postgresql-client) to back up or restore "
                          "a PostgreSQL database")
    return found


def _pg_backup(db: Database, target: Path, progress: Progress | None) -> dict[str, Any]:
    pg_dump = _tool("pg_dump")
    conninfo, env = libpq(db.url)
    with db.engine.connect().execution_options(isolation_level="REPEATABLE READ") as c:
        snapshot: str = c.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        info = describe(c)
        if progress:
            progress(0, 1)
        # The exporting transaction stays open until pg_dump has taken the snapshot (and
        # here, finished): the dump and the description are of the same instant.
        result = subprocess.run(
            [pg_dump, "--format=custom", f"--snapshot={snapshot}", "--no-owner",
             "--no-privileges", f"--file={target}", f"--dbname={conninfo}"],
            env=env, capture_output=True, text=True, check=False)
        c.rollback()
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise BackupError(f"pg_dump failed: {last}")
    if progress:
        progress(1, 1)
    return info


def backup(db: Database, out: Path, *, actor: audit.Actor,
           progress: Progress | None = None) -> dict[str, Any]:
    """Write a backup of ``db`` to ``out``; returns its signed description."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gmp-backup-", dir=out.parent) as folder:
        if db.dialect == "sqlite":
            payload = Path(folder) / SQLITE_PAYLOAD
            info = _sqlite_backup(db.url, payload, progress)
        else:
            payload = Path(folder) / PG_PAYLOAD
            info = _pg_backup(db, payload, progress)
        description = {
            "format": FORMAT,
            "dialect": db.dialect,
            "created_at": audit.format_time(utcnow()),
            "payload": payload.name,
            "payload_sha256": _sha256_file(payload),
            "payload_bytes": payload.stat().st_size,
            **info,
        }
        try:
            description = signing.sign_document(description, signing.installation_key())
        except SigningKeyUnavailable as exc:
            description |= {"signature": None, "unsigned_because": exc.detail}
        partial = out.with_name(f".{out.name}.partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED,
                             allowZip64=True) as archive:
            archive.writestr(DESCRIPTION, json.dumps(description, indent=2, sort_keys=True))
            archive.write(payload, payload.name)
        os.replace(partial, out)  # a backup file is complete or absent, never half written
    # Annex 11 §7.2: backups are part of the record. Written after the copy (not in it).
    with db.transaction(actor=actor) as session:
        audit.record(session, "database.backup", "backup", out.name, new={
            "file_sha256": _sha256_file(out), "audit_head": description["audit_head"],
            "label_key_ids": description["label_key_ids"]})
    return description


# --- restore ----------------------------------------------------------------------------

def _tables(connection: Connection) -> int:
    if connection.dialect.name == "postgresql":
        return connection.execute(text(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN "
            "('pg_catalog', 'information_schema')")).scalar_one()
    return connection.execute(text(
        "SELECT count(*) FROM sqlite_master WHERE type IN ('table', 'view', 'trigger') "
        "AND name NOT LIKE 'sqlite_%'")).scalar_one()


def read_description(path: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as archive:
            description = json.loads(archive.read(DESCRIPTION))
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise BackupError(f"{path} is not a gmp-mes backup: {exc}") from exc
    if description.get("format") != FORMAT:
        raise BackupError(f"{path}: unknown backup format {description.get('format')!r}")
    return description


def restore(db: Database, source: Path, *, key_ids_here: set[str], actor: audit.Actor,
            progress: Progress | None = None) -> Restored:
    description = read_description(source)
    if description["dialect"] != db.dialect:
        raise BackupError(f"this is a {description['dialect']} backup; the configured "
                          f"database is {db.dialect}")
    if db.dialect == "sqlite":
        _sqlite_path(db.url).parent.mkdir(parents=True, exist_ok=True)
    with db.engine.connect() as connection:
        if _tables(connection):
            raise BackupError("the target database is not empty: restore only into a new, "
                              "empty database (nothing was changed)")
    with tempfile.TemporaryDirectory(prefix=".gmp-restore-") as folder:
        with zipfile.ZipFile(source) as archive:
            payload = Path(archive.extract(description["payload"], folder))
        if _sha256_file(payload) != description["payload_sha256"]:
            raise BackupError(f"{source}: the database file differs from its recorded "
                              "SHA-256 (damaged backup)")
        if db.dialect == "sqlite":
            _sqlite_restore(payload, _sqlite_path(db.url), progress)
        else:
            _pg_restore(db.url, payload)
    db.dispose()  # connections opened before the restore saw an empty database
    with db.engine.connect() as connection:
        result = audit.verify_chain(connection)
        head = audit.head(connection)
    if not result.ok:
        raise BackupError(f"restored, but {result.message()}")
    if (str(head) if head else None) != description["audit_head"]:
        raise BackupError(f"restored, but the audit trail ends at {head}, not at the "
                          f"recorded head {description['audit_head']}")
    keys = list(description.get("label_key_ids", []))
    missing = sorted(set(keys) - key_ids_here)
    # The restore itself goes into the restored trail, after it was verified.
    with db.transaction(actor=actor) as session:
        audit.record(session, "database.restore", "backup", source.name, new={
            "backup_created_at": description["created_at"],
            "payload_sha256": description["payload_sha256"],
            "verified_events": result.checked, "audit_head": description["audit_head"],
            "missing_label_keys": missing})
    return Restored(result.checked, description["audit_head"], keys, missing)


def _sqlite_restore(payload: Path, target: Path, progress: Progress | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(payload)
    destination = sqlite3.connect(target, timeout=30)
    try:
        source.backup(destination, pages=PAGES_PER_STEP,
                      progress=(lambda _s, left, total: progress(total - left, total))
                      if progress else None)
        destination.execute("PRAGMA journal_mode=WAL")
    finally:
        destination.close()
        source.close()


def _pg_restore(url: str, payload: Path) -> None:
    pg_restore = _tool("pg_restore")
    conninfo, env = libpq(url)
    result = subprocess.run(
        [pg_restore, "--single-transaction", "--exit-on-error", "--no-owner",
         "--no-privileges", f"--dbname={conninfo}", str(payload)],
        env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise BackupError(f"pg_restore failed: {last}")
