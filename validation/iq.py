"""Installation qualification (IQ): is this installation what was validated?

EU GMP Annex 11 §4 and 21 CFR 11.10(a): before use (and after every change) a site shows
that the software, its database and its keys are installed as specified. Each check
passes or fails on its own with the reason; the record of the run is signed with the
installation key and kept in the instance folder (``validation/iq/``), and the run is
written to the audit trail when the database can take it.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import re
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from gmp_mes import audit
from gmp_mes.clock import utcnow
from gmp_mes.settings import FIN_PATTERN, Settings
from labels.services import SigningKeyUnavailable
from validation import signing

RECORD_KIND = "installation qualification"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _guard(name: str, check: Callable[[], tuple[bool, str]]) -> Check:
    """A check that cannot run has failed, and says why (the IQ itself never crashes)."""
    try:
        ok, detail = check()
    except (SQLAlchemyError, OSError, ValueError, sqlite3.Error) as exc:
        return Check(name, False, f"could not check: {str(exc).splitlines()[0]}")
    return Check(name, ok, detail)


# --- versions ---------------------------------------------------------------------------

def check_versions() -> tuple[bool, str]:
    from packaging.requirements import Requirement

    version = metadata.version("gmp-mes")
    problems, found = [], [f"gmp-mes {version}", f"python {platform.python_version()}"]
    for spec in metadata.requires("gmp-mes") or []:
        requirement = Requirement(spec)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # test-only dependencies are not part of the installation
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement.name} missing")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{requirement.name} {installed} outside {requirement.specifier}")
        found.append(f"{requirement.name} {installed}")
    if problems:
        return False, "; ".join(problems)
    return True, ", ".join(found)


# --- schema -----------------------------------------------------------------------------

def check_schema(engine: Engine) -> tuple[bool, str]:
    from alembic.script import ScriptDirectory

    from gmp_mes import migrate

    script = ScriptDirectory.from_config(migrate.alembic_config())
    expected = set(script.get_heads())
    current = migrate.current_heads(engine)
    known = {r.revision for r in script.walk_revisions()}
    unknown = sorted(current - known)
    # Alembic keeps only the revisions nothing else depends on: a branch head another
    # branch depends on is applied when it is an ancestor of a recorded one.
    applied = _ancestors(script, current) if not unknown else set()
    behind = sorted(expected - applied)
    if current and not unknown and not behind:
        return True, f"at head: {', '.join(sorted(expected))}"
    parts = []
    if not current:
        parts.append("no schema (run `gmp-mes init`)")
    elif behind:
        parts.append(f"not at head: {', '.join(behind)} not applied")
    if unknown:
        parts.append(f"unknown revision(s) {', '.join(unknown)} (a newer or foreign schema)")
    return False, "; ".join(parts) + f" (database at {', '.join(sorted(current)) or 'nothing'})"


def _ancestors(script: Any, revisions: set[str]) -> set[str]:
    """The revisions and everything they stand on (down revisions and dependencies)."""
    seen: set[str] = set()
    todo = list(revisions)
    while todo:
        revision = script.get_revision(todo.pop())
        if revision is None or revision.revision in seen:
            continue
        seen.add(revision.revision)
        for field_ in (revision.down_revision, revision.dependencies):
            if field_:
                todo.extend([field_] if isinstance(field_, str) else field_)
    return seen


# --- append-only triggers ---------------------------------------------------------------

@cache
def expected_guards() -> frozenset[tuple[str, str]]:
    """(table, operation) pairs the migrations guard, read from a scratch database migrated
    to head: the migrations are the specification, whatever they add or drop."""
    from gmp_mes.db import Database
    from gmp_mes.migrate import upgrade

    with tempfile.TemporaryDirectory(prefix="gmp-iq-") as folder:
        scratch = Database(f"sqlite:///{Path(folder) / 'reference.sqlite'}")
        try:
            upgrade(scratch.engine)
            with scratch.engine.connect() as connection:
                return frozenset(_sqlite_guards(connection)[0])
        finally:
            scratch.dispose()


def _sqlite_guards(connection: Any) -> tuple[set[tuple[str, str]], list[str]]:
    rows = connection.execute(text(
        "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'")).all()
    guards, hollow = set(), []
    for name, table, sql in rows:
        match = re.fullmatch(rf"{re.escape(table)}_refuse_(update|delete)", name)
        if match is None:
            continue
        if "RAISE(ABORT" not in re.sub(r"\s+", "", sql or "").upper():
            hollow.append(name)  # a trigger with the right name that refuses nothing
            continue
        guards.add((table, match[1].upper()))
    return guards, hollow


def _postgresql_guards(connection: Any) -> tuple[set[tuple[str, str]], list[str]]:
    rows = connection.execute(text(
        "SELECT c.relname, t.tgname, t.tgenabled, "
        "       (t.tgtype & 8) <> 0 AS on_delete, (t.tgtype & 16) <> 0 AS on_update, "
        "       (t.tgtype & 32) <> 0 AS on_truncate, "
        "       p.proname, p.prosrc "
        "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_proc p ON p.oid = t.tgfoid "
        "WHERE NOT t.tgisinternal AND n.nspname = current_schema()")).all()
    guards, hollow = set(), []
    truncate_guarded = set()
    for table, name, enabled, on_delete, on_update, on_truncate, function, source in rows:
        if name == f"{table}_refuse_truncate" and on_truncate:
            if enabled != "D" and function == "gmp_refuse_change":
                truncate_guarded.add(table)
            continue
        if name != f"{table}_refuse_change":
            continue
        if enabled == "D" or function != "gmp_refuse_change" or "RAISE EXCEPTION" not in (
                source or "").upper():
            hollow.append(name)  # disabled, or a function that does not refuse
            continue
        if on_update:
            guards.add((table, "UPDATE"))
        if on_delete:
            guards.add((table, "DELETE"))
    # TRUNCATE deletes without DELETE triggers firing: a DELETE guard counts only with
    # its TRUNCATE guard (ddl.refuse creates both).
    for table, operation in sorted(guards):
        if operation == "DELETE" and table not in truncate_guarded:
            guards.discard((table, operation))
            hollow.append(f"{table}_refuse_truncate (missing)")
    return guards, hollow


def check_triggers(engine: Engine) -> tuple[bool, str]:
    expected = expected_guards()
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            present, hollow = _postgresql_guards(connection)
        else:
            present, hollow = _sqlite_guards(connection)
    missing = sorted(expected - present)
    if missing or hollow:
        parts = []
        if missing:
            parts.append("missing: " + ", ".join(f"{op} guard on {t}" for t, op in missing))
        if hollow:
            parts.append("not refusing: " + ", ".join(sorted(hollow)))
        return False, "; ".join(parts)
    tables = sorted({t for t, _ in expected})
    return True, f"{len(expected)} guards on {len(tables)} tables ({', '.join(tables)})"


# --- room bookings ----------------------------------------------------------------------

SQLITE_OVERLAP_TRIGGERS = frozenset({"room_booking_overlap_insert",
                                     "room_booking_overlap_update"})


def check_booking_overlap(engine: Engine) -> tuple[bool, str]:
    """SPEC §13: the database itself refuses two booked windows of one room that overlap
    (schedule_0001): on PostgreSQL an exclusion constraint, which needs the contrib
    extension btree_gist; on SQLite two triggers."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("room_booking"):
            return True, "no room bookings in this installation (schedule not installed)"
        if connection.dialect.name == "postgresql":
            extension = connection.execute(text(
                "SELECT extversion FROM pg_extension WHERE extname = 'btree_gist'")).scalar()
            constraint: int = connection.execute(text(
                "SELECT count(*) FROM pg_constraint WHERE conname = 'ex_room_booking_overlap'"
                " AND contype = 'x'")).scalar_one()
            if extension is None or constraint != 1:
                missing = [name for name, absent in (
                    ("extension btree_gist", extension is None),
                    ("exclusion constraint ex_room_booking_overlap", constraint != 1)) if absent]
                return False, "missing: " + ", ".join(missing)
            return True, f"exclusion constraint ex_room_booking_overlap (btree_gist {extension})"
        present: set[str] = set(connection.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = "
            "'room_booking'")).scalars())
    missing_triggers = sorted(SQLITE_OVERLAP_TRIGGERS - present)
    if missing_triggers:
        return False, "missing: " + ", ".join(missing_triggers)
    return True, "triggers " + ", ".join(sorted(SQLITE_OVERLAP_TRIGGERS))


# --- signing key ------------------------------------------------------------------------

def check_signing_key(key_path: Path) -> tuple[bool, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not key_path.exists():
        return False, f"no signing key at {key_path} (run `gmp-mes init`)"
    mode = key_path.stat().st_mode & 0o777
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        return False, f"{key_path} is not an unencrypted PEM private key"
    if not isinstance(key, Ed25519PrivateKey):
        return False, f"{key_path} is not an Ed25519 key"
    if mode & 0o077:
        return False, (f"{key_path} has mode {mode:o}: readable or writable by others "
                       "(anyone who can read it can forge labels); chmod 600")
    return True, f"{key_path} mode {mode:o}, key id {signing.key_id(key.public_key())}"


# --- settings ---------------------------------------------------------------------------

def check_settings(settings: Settings) -> tuple[bool, str]:
    problems = []
    if len(settings.secret_key) < 32:
        problems.append("secret key shorter than 32 characters")
    if not FIN_PATTERN.match(settings.facility_id):
        problems.append(f"facility id {settings.facility_id!r} is not an ISBT 128 facility code")
    try:
        ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"unknown time zone {settings.timezone!r}")
    url = make_url(settings.database_url)
    if url.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        problems.append(f"database driver {url.drivername} is not supported")
    if not os.access(settings.instance_path, os.W_OK):
        problems.append(f"instance folder {settings.instance_path} is not writable")
    if settings.process_dir is not None and not Path(settings.process_dir).is_dir():
        problems.append(f"process folder {settings.process_dir} is missing")
    if settings.smtp_url:
        from gmp_mes.notify import parse_smtp_url

        try:
            parse_smtp_url(settings.smtp_url)
        except ValueError:  # its message quotes the URL, which may hold a password
            problems.append("SMTP URL is not smtp[s]://host[:port]?from=address")
    if settings.webhook_url and urlsplit(settings.webhook_url).scheme not in ("http", "https"):
        problems.append("webhook URL is not http(s)")
    if not settings.builtin_process_dir.is_dir():
        problems.append(f"built-in process folder {settings.builtin_process_dir} is missing")
    if problems:
        return False, "; ".join(problems)
    return True, (f"database {url.get_backend_name()}, facility {settings.facility_id}, "
                  f"time zone {settings.timezone}")


def check_database(engine: Engine) -> tuple[bool, str]:
    version: str
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            version = connection.execute(text("SHOW server_version")).scalar_one()
        else:
            version = connection.execute(text("SELECT sqlite_version()")).scalar_one()
    return True, f"{engine.dialect.name} {version}"


# --- the run ----------------------------------------------------------------------------

def run_checks(settings: Settings, engine: Engine) -> list[Check]:
    return [
        _guard("versions", check_versions),
        _guard("database reachable", lambda: check_database(engine)),
        _guard("schema at head", lambda: check_schema(engine)),
        _guard("append-only triggers", lambda: check_triggers(engine)),
        _guard("room booking overlaps refused", lambda: check_booking_overlap(engine)),
        _guard("signing key present and private", lambda: check_signing_key(
            Path(settings.signing_key))),
        _guard("settings valid", lambda: check_settings(settings)),
    ]


def safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def build_record(checks: list[Check], settings: Settings, performed_by: str,
                 at: datetime | None = None) -> dict[str, Any]:
    at = at or utcnow()
    return {
        "record": RECORD_KIND,
        "performed_at": audit.format_time(at),
        "performed_by": performed_by,
        "host": platform.node(),
        "database": safe_url(settings.database_url),
        "gmp_mes_version": metadata.version("gmp-mes"),
        "ok": all(c.ok for c in checks),
        "checks": [asdict(c) for c in checks],
    }


def records_dir(settings: Settings) -> Path:
    return Path(settings.instance_path) / "validation" / "iq"


def save_record(record: dict[str, Any], settings: Settings) -> tuple[Path, dict[str, Any]]:
    """Sign (when the key is usable) and write the record; returns its path and content."""
    import json

    try:
        signed = signing.sign_document(record, signing.installation_key())
    except SigningKeyUnavailable as exc:
        signed = record | {"signature": None, "unsigned_because": exc.detail}
    folder = records_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = record["performed_at"].replace("-", "").replace(":", "").replace(".", "")
    path = folder / f"IQ-{stamp}.json"
    path.write_text(json.dumps(signed, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path, signed


@dataclass(frozen=True)
class StoredRecord:
    path: Path
    content: dict[str, Any]
    signature_problem: str | None  # None: signed by a key of this installation


def last_record(settings: Settings) -> StoredRecord | None:
    import json

    folder = records_dir(settings)
    paths = sorted(folder.glob("IQ-*.json")) if folder.is_dir() else []
    if not paths:
        return None
    path = paths[-1]
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return StoredRecord(path, {}, f"unreadable: {exc}")
    try:
        trusted = signing.installation_public_keys()
    except SigningKeyUnavailable as exc:
        return StoredRecord(path, content, f"cannot be checked: {exc.detail}")
    return StoredRecord(path, content, signing.verify_document(content, trusted))


def audit_run(session: Any, path: Path, record: dict[str, Any]) -> None:
    """The IQ run in the audit trail (21 CFR 11.10(e)): who, when, outcome, record digest."""
    from gmp_mes import audit

    audit.record(session, "validation.iq", "installation_qualification", path.stem,
                 new={"ok": record["ok"], "record_sha256": audit.digest(record),
                      "failed": [c["name"] for c in record["checks"] if not c["ok"]]})
