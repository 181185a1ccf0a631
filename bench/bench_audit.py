"""``gmp-mes audit verify`` against the real floor, and incremental verification (issue 14).

1. Chain verification of 1,000,000 events vs the floor: the same rows read raw through
   the same driver (the same query, cursor and batch size: a server-side cursor on
   PostgreSQL) and hashed with hashlib, checking nothing. Target: verify at least 0.7x
   the floor's rate, with flat memory (the peak traced memory of a verification does
   not grow with the trail). The best of five alternating rounds of each is the figure.
   Times are this process's CPU time: the machine is shared, and wall time swings by
   3x between identical runs. On SQLite all the work is in-process; on PostgreSQL the
   server's share is the same for both (the same query and cursor), so the CPU ratio is
   a lower bound of the wall-time ratio. Best wall times are listed in the notes.
2. ``audit verify --since-checkpoint`` over the last day of a 1,000,000-event trail
   spanning 1,000 days (1,000 events a day, a signed checkpoint at the start of the
   last day) vs the full run over the same trail (every event and every checkpoint).
   Target: at least 50x faster.

Record reconciliation (``gmp_mes.reconcile``) is not part of either figure: the synthetic
trail describes no real records.
"""

from __future__ import annotations

import hashlib
import itertools
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from bench.common import Result, postgres_available, scratch_database
from gmp_mes import audit, checkpoints
from gmp_mes.clock import clock
from gmp_mes.db import Database

START = datetime(2026, 1, 1, tzinfo=UTC)
ROUNDS = 5


def synthetic_events(n: int, spacing: timedelta = timedelta(milliseconds=37)
                     ) -> Iterator[dict[str, Any]]:
    """A realistic mix: item status updates with old/new values, as the trail holds them."""
    prev = audit.GENESIS_HASH
    for seq in range(1, n + 1):
        at = START + spacing * seq
        body = {
            "seq": seq,
            "at": audit.format_time(at),
            "user_id": seq % 40 + 1,
            "username": f"operator{seq % 40}",
            "action": "update",
            "entity_type": "item",
            "entity_id": f"ITM-{seq:08d}",
            "reason": None,
            "old": {"status": "quarantine", "location": "Incubator 3"},
            "new": {"status": "released", "location": "LN2 tank 2, rack B"},
        }
        record = audit.canonical_json(body)
        hash_ = audit.chain_hash(prev, record)
        yield {"seq": seq, "record": record, "prev_hash": prev, "hash": hash_}
        prev = hash_


def load(db: Database, rows: Iterable[dict[str, Any]]) -> None:
    columns = ("seq", "record", "prev_hash", "hash")
    if db.dialect == "postgresql":
        raw = db.engine.raw_connection()
        try:
            with (
                raw.cursor() as cur,
                cur.copy(f"COPY audit_event ({', '.join(columns)}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row([row[c] for c in columns])
            raw.commit()
        finally:
            raw.close()
        return
    sql = text(
        f"INSERT INTO audit_event ({', '.join(columns)}) VALUES "
        f"({', '.join(':' + c for c in columns)})"
    )
    batch: list[dict[str, Any]] = []
    with db.engine.begin() as c:
        for row in rows:
            batch.append(row)
            if len(batch) == 50_000:
                c.execute(sql, batch)
                batch.clear()
        if batch:
            c.execute(sql, batch)


def floor_seconds(db: Database, batch: int = 10_000) -> tuple[float, float, int]:
    """The same rows as verify_chain, read the same way, each hashed, nothing checked.
    (CPU seconds, wall seconds, events)."""
    with db.engine.connect() as c:
        raw = c.connection.dbapi_connection
        postgresql = db.dialect == "postgresql"
        cpu = time.process_time()
        started = time.perf_counter()
        cursor = raw.cursor(name="gmp_audit_floor") if postgresql else raw.cursor()
        if postgresql:
            cursor.itersize = batch
        marker = "%s" if postgresql else "?"
        cursor.execute(
            "SELECT seq, hash, prev_hash || record, occurred_at FROM audit_event "
            f"WHERE seq > {marker} ORDER BY seq", (0,)
        )
        sha256 = hashlib.sha256
        n = 0
        while rows := cursor.fetchmany(batch):
            for _seq, _hash, message, _at in rows:
                sha256(message.encode()).hexdigest()
            n += len(rows)
        cursor.close()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return cpu, elapsed, n


def verify_seconds(db: Database) -> tuple[float, float, int]:
    with db.engine.connect() as c:
        cpu = time.process_time()
        started = time.perf_counter()
        result = audit.verify_chain(c)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert result.ok and not result.backward_count, result.message()
    return cpu, elapsed, result.checked


def peak_memory(db: Database) -> int:
    tracemalloc.start()
    with db.engine.connect() as c:
        audit.verify_chain(c)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def _key() -> checkpoints.InstallationKey:
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    return checkpoints.InstallationKey(
        sign=lambda message: ("bench", private.sign(message)),
        public_keys=lambda: {"bench": public},
    )


def full_seconds(db: Database, key: checkpoints.InstallationKey) -> float:
    """What `audit verify` does to the trail: every event, every checkpoint."""
    with db.engine.connect() as c:
        started = time.perf_counter()
        result = audit.verify_chain(c)
        report = checkpoints.check_all(c, key.public_keys())
        elapsed = time.perf_counter() - started
    assert result.ok and not report.problems, (result.message(), report.problems)
    return elapsed


def incremental_seconds(db: Database, key: checkpoints.InstallationKey) -> tuple[float, int]:
    """What `audit verify --since-checkpoint` does: the newest checkpoint, then what follows."""
    with db.engine.connect() as c:
        started = time.perf_counter()
        report = checkpoints.check_latest(c, key.public_keys())
        assert report.last is not None and not report.problems, report.problems
        result = audit.verify_chain(c, after=report.last.anchor)
        elapsed = time.perf_counter() - started
    assert result.ok, result.message()
    return elapsed, result.checked


def _floor_result(backend: str, n: int) -> Result:
    with scratch_database(backend) as db:
        load(db, synthetic_events(max(n // 10, 50_000)))
        small_peak = peak_memory(db)
    with scratch_database(backend) as db:
        load(db, synthetic_events(n))
        floors, verifies, floor_walls, verify_walls = [], [], [], []
        for _ in range(ROUNDS):
            cpu, wall, _ = floor_seconds(db)
            floors.append(cpu)
            floor_walls.append(wall)
            cpu, wall, checked = verify_seconds(db)
            verifies.append(cpu)
            verify_walls.append(wall)
        big_peak = peak_memory(db)
    flat = big_peak <= small_peak * 1.5 + 1_000_000
    rate, baseline = checked / min(verifies), checked / min(floors)
    return Result(
        name=f"audit verify {checked:,} events ({backend})",
        figure=rate,
        unit="ev/s",
        baseline=baseline,
        baseline_name="same rows read raw through the same driver and hashed",
        target=">= 0.70 x floor, flat mem",
        met=rate / baseline >= 0.70 and flat,
        notes=(
            f"CPU s: verify {', '.join(f'{t:.2f}' for t in verifies)}, floor "
            f"{', '.join(f'{t:.2f}' for t in floors)}; best wall s: verify "
            f"{min(verify_walls):.2f}, floor {min(floor_walls):.2f}; peak traced memory "
            f"{big_peak / 1e6:.1f} MB at {n:,} events vs {small_peak / 1e6:.1f} MB at "
            f"{max(n // 10, 50_000):,} ({'flat' if flat else 'GROWS'})"
        ),
    )


def _incremental_result(backend: str, n: int, days: int) -> Result:
    per_day = n // days
    spacing = timedelta(days=1) / per_day
    key = _key()
    with scratch_database(backend) as db:
        events = synthetic_events(n, spacing)
        # Daily checkpoints (as the scheduler writes them, here one per simulated day).
        for day in range(days):
            load(db, itertools.islice(events, per_day))
            if day < days - 1:
                clock.freeze(START + timedelta(days=day + 1))
                with db.transaction(actor=audit.Actor.system("bench")) as s:
                    checkpoints.write_checkpoint(s, key)
        clock.unfreeze()
        fulls, increments = [], []
        for _ in range(ROUNDS):
            fulls.append(full_seconds(db, key))
            elapsed, checked = incremental_seconds(db, key)
            increments.append(elapsed)
    full, increment = min(fulls), min(increments)
    return Result(
        name=f"verify --since-checkpoint, 1 of {days:,} days ({backend})",
        figure=full / increment,
        unit="x",
        baseline=1.0,
        baseline_name="full verify of the same trail",
        target=">= 50 x faster than full",
        met=full / increment >= 50,
        notes=(
            f"{checked:,} events of the last day in {increment * 1000:.1f} ms vs the full "
            f"run over {n:,} events and {days - 1:,} checkpoints in {full:.2f} s"
        ),
    )


def run(args: Any) -> list[Result]:
    n = 100_000 if args.quick else 1_000_000
    days = 100 if args.quick else 1_000
    results = []
    backends = ["sqlite"] + (["postgresql"] if postgres_available() else [])
    for backend in backends:
        results.append(_floor_result(backend, n))
        results.append(_incremental_result(backend, n, days))
    return results
