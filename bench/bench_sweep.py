"""The expiry sweep over 1,000,000 items with 1% due, on SQLite and PostgreSQL, next to the
same database work done as raw SQL in one transaction (issue 8).

Both runs start from identical copies of one seeded database (a file copy on SQLite,
CREATE DATABASE ... TEMPLATE on PostgreSQL), and both are timed from the start of the
transaction to the end of its COMMIT:

- sweep: ``identity.sweep.sweep`` in a ``db.transaction`` (what the scheduler job does):
  reads the distinct warning thresholds and post-thaw windows (a scan of the live
  items), expires the due items (one UPDATE ... RETURNING per live status, so the old
  status in the audit trail is exact), looks for crossed warning thresholds (none:
  the other 99% expire beyond every warning window), inserts the alert rows in one
  statement and appends the hash-chained audit events in one statement;
- raw SQL: the driver alone, one transaction: the UPDATE ... RETURNING of the due
  items, one INSERT of their alert rows, and the audit events (hash chain computed
  with hashlib, written in one statement: COPY on PostgreSQL, executemany on SQLite).

Three alternating rounds (raw, sweep, raw, ...), each on a fresh copy; the best time of
each contender is the figure (the machine is shared), every round is listed in the notes.
Target: the sweep under 2 s and at most 2x the raw SQL. ``--quick``: 50,000 items, one
round.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.common import POSTGRES_URL, Result, postgres_available
from gmp_mes import migrate
from gmp_mes.audit import GENESIS_HASH, Actor, format_time
from gmp_mes.clock import clock
from gmp_mes.db import Database, throwaway_engine

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PATIENTS = 1000
SITE = "CLEAN1"
LIVE = ("quarantine", "released", "conditionally_released", "shipped", "received", "thawed",
        "blocked", "in_process", "available")


def run(args: Any) -> list[Result]:
    n = 50_000 if args.quick else 1_000_000
    results = []
    for backend in ("sqlite", "postgresql"):
        if backend == "postgresql" and not postgres_available():
            print("bench_sweep: PostgreSQL unreachable, skipped", flush=True)
            continue
        results.append(_measure(backend, n, rounds=1 if args.quick else 3))
    return results


def _measure(backend: str, n: int, rounds: int) -> Result:
    raw_times: list[float] = []
    sweep_times: list[float] = []
    with _copies(backend, n, rounds) as urls:
        # Alternate the contenders on fresh identical copies; the best of each counts
        # (the machine is shared: the minimum is the least disturbed measurement).
        for raw_url, sweep_url in urls:
            raw_seconds, raw_expired = _raw_sql(raw_url)
            sweep_seconds, swept, new_alerts = _sweep(sweep_url)
            if swept != raw_expired or swept != n // 100:
                raise AssertionError(
                    f"sweep expired {swept}, raw SQL {raw_expired}, expected {n // 100}"
                )
            raw_times.append(raw_seconds)
            sweep_times.append(sweep_seconds)
        verified = _verify(urls[-1][1])
    best_sweep, best_raw = min(sweep_times), min(raw_times)
    ratio = best_sweep / best_raw
    spread = ", ".join(f"{s * 1000:.0f}/{r * 1000:.0f}" for s, r in zip(sweep_times, raw_times,
                                                                       strict=True))
    return Result(
        name=f"sweep {n:,} items, 1% due ({backend})",
        figure=best_sweep * 1000,
        unit="ms",
        baseline=best_raw * 1000,
        baseline_name="same UPDATE + INSERTs as raw SQL, one transaction",
        target="< 2000 ms and <= 2x raw SQL",
        met=best_sweep < 2.0 and ratio <= 2.0,
        notes=f"{swept:,} items expired, {new_alerts:,} alerts, {swept + new_alerts:,} audit "
              f"events per run; times include COMMIT; best of {len(sweep_times)} alternating "
              f"runs (sweep/raw ms: {spread}); audit chain after the sweep: {verified}",
    )


# --- seeding ---------------------------------------------------------------------------------

def _coi(i: int) -> str:
    return f"A999926{i:06d}X"  # check character irrelevant to the sweep


def _items(n: int) -> Any:
    """1% due (expired 1-50 minutes ago), 99% expiring 3-200 days ahead."""
    for i in range(n):
        due = i % 100 == 0
        if due:
            expires = NOW - timedelta(minutes=i % 50 + 1)
        else:
            expires = NOW + timedelta(days=3 + i % 200, minutes=i % 1440)
        yield (f"ITM-{i:08d}", "final_product", "released" if i % 3 else "quarantine",
               _coi(i % PATIENTS), SITE, expires, "PT24H,PT4H", "PT3H", NOW - timedelta(days=5))


ITEM_COLUMNS = ("item_id", "kind", "status", "coi_id", "site_code", "expires_at",
                "expiry_warnings", "post_thaw_window", "created_at")


def _seed(db: Database, n: int) -> None:
    with db.engine.begin() as c:
        c.execute(text("INSERT INTO site (code, name, kind, timezone, created_at) "
                       "VALUES (:c, 'Clean room', 'manufacturing', 'UTC', :t)"),
                  {"c": SITE, "t": NOW if db.dialect == "postgresql" else _lite(NOW)})
        c.execute(
            text("INSERT INTO patient (coi_id, given_name, family_name, date_of_birth, mrn, "
                 "treatment_site, enrolled_at) VALUES (:coi, 'Ann', 'Lee', :dob, :mrn, :s, :t)"),
            [{"coi": _coi(i), "dob": date(1970, 1, 1), "mrn": f"MRN{i}", "s": SITE,
              "t": NOW if db.dialect == "postgresql" else _lite(NOW)} for i in range(PATIENTS)],
        )
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        if db.dialect == "postgresql":
            with cursor.copy(f"COPY item ({', '.join(ITEM_COLUMNS)}) FROM STDIN") as copy:
                for row in _items(n):
                    copy.write_row(row)
        else:
            cursor.execute("BEGIN")
            cursor.executemany(
                f"INSERT INTO item ({', '.join(ITEM_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(ITEM_COLUMNS))})",
                ((*row[:5], _lite(row[5]), *row[6:8], _lite(row[8])) for row in _items(n)),
            )
            cursor.execute("COMMIT")
        raw.commit()
    finally:
        raw.close()
    with db.engine.begin() as c:
        c.execute(text("ANALYZE"))


def _lite(value: datetime) -> str:
    """How the UTC column type stores a time on SQLite."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class _copies:
    """Seed one database, then give ``rounds`` pairs of identical copies (raw SQL, sweep)."""

    def __init__(self, backend: str, n: int, rounds: int) -> None:
        self.backend, self.n, self.rounds = backend, n, rounds
        self.names: list[str] = []
        self.folder: str | None = None

    def __enter__(self) -> list[tuple[str, str]]:
        if self.backend == "sqlite":
            self.folder = tempfile.mkdtemp(prefix="gmp_bench_sweep_")
            seed = Path(self.folder) / "seed.sqlite"
            db = Database(f"sqlite:///{seed}")
            migrate.upgrade(db.engine)
            _seed(db, self.n)
            with db.engine.connect() as c:
                c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            db.dispose()
            pairs = []
            for round_ in range(self.rounds):
                urls = []
                for name in ("raw", "sweep"):
                    path = Path(self.folder) / f"{name}{round_}.sqlite"
                    shutil.copyfile(seed, path)
                    urls.append(f"sqlite:///{path}")
                pairs.append((urls[0], urls[1]))
            return pairs
        tag = uuid.uuid4().hex[:8]
        seed_name = f"gmp_bench_sweep_{tag}"
        self._admin(f'CREATE DATABASE "{seed_name}"')
        self.names.append(seed_name)
        db = Database(self._url(seed_name))
        migrate.upgrade(db.engine)
        _seed(db, self.n)
        db.dispose()
        pairs = []
        for round_ in range(self.rounds):
            urls = []
            for name in ("raw", "sweep"):
                copy = f"{seed_name}_{name}{round_}"
                self._admin(f'CREATE DATABASE "{copy}" TEMPLATE "{seed_name}"')
                self.names.append(copy)
                urls.append(self._url(copy))
            pairs.append((urls[0], urls[1]))
        return pairs

    def __exit__(self, *_: Any) -> None:
        for name in reversed(self.names):
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    @staticmethod
    def _url(name: str) -> str:
        return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    @staticmethod
    def _admin(sql: str) -> None:
        admin = throwaway_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(sql))
        admin.dispose()


def _warm(db: Database) -> None:
    """Same starting point for both runs: the table read once (caches warm)."""
    with db.engine.connect() as c:
        c.execute(text("SELECT count(*), max(expires_at) FROM item")).one()
        c.execute(text("SELECT count(*) FROM audit_event")).one()


# --- the two contenders ------------------------------------------------------------------------

def _sweep(url: str) -> tuple[float, int, int]:
    from identity.sweep import sweep

    db = Database(url)
    try:
        _warm(db)
        clock.freeze(NOW)
        try:
            started = time.perf_counter()
            with db.transaction(actor=Actor.system("sweep")) as session:
                result = sweep(session)
            seconds = time.perf_counter() - started
        finally:
            clock.unfreeze()
        return seconds, len(result.expired), result.new_alerts
    finally:
        db.dispose()


def _raw_sql(url: str) -> tuple[float, int]:
    db = Database(url)
    try:
        _warm(db)
        raw = db.engine.raw_connection()
        try:
            cursor = raw.cursor()
            started = time.perf_counter()
            expired = _raw_transaction(db.dialect, cursor, raw)
            seconds = time.perf_counter() - started
        finally:
            raw.close()
        return seconds, expired
    finally:
        db.dispose()


def _raw_transaction(dialect: str, cursor: Any, raw: Any) -> int:
    pg = dialect == "postgresql"
    mark = "%s" if pg else "?"
    live = ", ".join(f"'{s}'" for s in LIVE)
    if not pg:
        cursor.execute("BEGIN IMMEDIATE")
    cursor.execute(
        f"UPDATE item SET status = 'expired' WHERE status IN ({live}) AND expires_at <= {mark} "
        "RETURNING item_id, kind, coi_id, site_code, expires_at",
        (NOW if pg else _lite(NOW),),
    )
    items = cursor.fetchall()
    created = NOW if pg else _lite(NOW)
    alerts = [
        (f"expired:{item_id}", "expired", "critical", "item", item_id,
         f"final product {item_id} (COI {coi}) has expired", expires, site,
         "qa,operator,clinician", "open", created)
        for item_id, _kind, coi, site, expires in items
    ]
    columns = ("cause, kind, severity, subject_type, subject_id, message, due_at, site_code, "
               "roles, status, created_at")
    if pg:
        types = ("text",) * 6 + ("timestamptz", "text", "text", "text", "timestamptz")
        arrays = ", ".join(f"%s::{t}[]" for t in types)
        cursor.execute(
            f"INSERT INTO alert ({columns}) SELECT * FROM unnest({arrays}) "
            "ON CONFLICT (cause) DO NOTHING RETURNING id",
            [list(column) for column in zip(*alerts, strict=True)],
        )
        ids = [row[0] for row in cursor.fetchall()]
    else:
        cursor.execute("SELECT coalesce(max(id), 0) FROM alert")
        before = cursor.fetchone()[0]
        cursor.executemany(
            f"INSERT INTO alert ({columns}) VALUES ({', '.join('?' * 11)}) "
            "ON CONFLICT (cause) DO NOTHING", alerts,
        )
        cursor.execute("SELECT id FROM alert WHERE id > ?", (before,))
        ids = [row[0] for row in cursor.fetchall()]
    cursor.execute("SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1")
    head = cursor.fetchone()
    seq, prev = (head[0], head[1]) if head else (0, GENESIS_HASH)
    at = format_time(NOW)
    events = []
    bodies = [("update", "item", item_id, {"status": "released"}, {"status": "expired"})
              for item_id, *_ in items]
    bodies += [("create", "alert", str(i), None, {"cause": f"expired:{i}"}) for i in ids]
    for action, entity, entity_id, old, new in bodies:
        seq += 1
        record = json.dumps({"seq": seq, "at": at, "user_id": None, "username": "system:raw",
                             "action": action, "entity_type": entity, "entity_id": entity_id,
                             "reason": None, "old": old, "new": new},
                            sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256((prev + record).encode()).hexdigest()
        events.append((seq, record, prev, digest))
        prev = digest
    if pg:
        with cursor.copy("COPY audit_event (seq, record, prev_hash, hash) FROM STDIN") as copy:
            for row in events:
                copy.write_row(row)
        raw.commit()
    else:
        cursor.executemany(
            "INSERT INTO audit_event (seq, record, prev_hash, hash) VALUES (?, ?, ?, ?)", events
        )
        cursor.execute("COMMIT")
    return len(items)


def _verify(url: str) -> str:
    from gmp_mes import audit

    db = Database(url)
    try:
        with db.engine.connect() as c:
            return audit.verify_chain(c).message()
    finally:
        db.dispose()

