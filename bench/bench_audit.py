"""``gmp-mes audit verify`` over 1,000,000 events vs raw hashlib.sha256 over the same bytes.

Target (issue 3): verification at least 30% of raw hashlib speed, with flat memory
(the peak traced memory of a verification of N events does not grow with N).
"""

from __future__ import annotations

import hashlib
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from bench.common import Result, postgres_available, scratch_database
from gmp_mes import audit
from gmp_mes.db import Database


def synthetic_events(n: int) -> Iterator[dict[str, Any]]:
    """A realistic mix: item status updates with old/new values, as the trail holds them."""
    prev = audit.GENESIS_HASH
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for seq in range(1, n + 1):
        at = start + timedelta(milliseconds=seq * 37)
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


def load(db: Database, n: int) -> None:
    columns = ("seq", "record", "prev_hash", "hash")
    if db.dialect == "postgresql":
        raw = db.engine.raw_connection()
        try:
            with (
                raw.cursor() as cur,
                cur.copy(f"COPY audit_event ({', '.join(columns)}) FROM STDIN") as copy,
            ):
                for row in synthetic_events(n):
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
        for row in synthetic_events(n):
            batch.append(row)
            if len(batch) == 50_000:
                c.execute(sql, batch)
                batch.clear()
        if batch:
            c.execute(sql, batch)


def raw_hash_rate(db: Database) -> float:
    """Events/s of bare hashlib over exactly the bytes verify hashes, already in memory."""
    with db.engine.connect() as c:
        messages = [
            (prev + record).encode()
            for prev, record in c.execute(text("SELECT prev_hash, record FROM audit_event"))
        ]
    sha256 = hashlib.sha256
    started = time.perf_counter()
    for message in messages:
        sha256(message).hexdigest()
    elapsed = time.perf_counter() - started
    return len(messages) / elapsed


def verify_rate(db: Database) -> tuple[float, int]:
    with db.engine.connect() as c:
        started = time.perf_counter()
        result = audit.verify_chain(c)
        elapsed = time.perf_counter() - started
    assert result.ok, result.message()
    return result.checked / elapsed, result.checked


def peak_memory(db: Database) -> int:
    tracemalloc.start()
    with db.engine.connect() as c:
        audit.verify_chain(c)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def run(args: Any) -> list[Result]:
    n = 100_000 if args.quick else 1_000_000
    results = []
    backends = ["sqlite"] + (["postgresql"] if postgres_available() else [])
    for backend in backends:
        with scratch_database(backend) as db:
            load(db, max(n // 10, 50_000))
            small_peak = peak_memory(db)
        with scratch_database(backend) as db:
            load(db, n)
            rate, checked = verify_rate(db)
            baseline = raw_hash_rate(db)
            big_peak = peak_memory(db)
        flat = big_peak <= small_peak * 1.5 + 1_000_000
        ratio = rate / baseline
        results.append(
            Result(
                name=f"audit verify {checked:,} events ({backend})",
                figure=rate,
                unit="ev/s",
                baseline=baseline,
                baseline_name="raw hashlib.sha256",
                target=">= 0.30 x hashlib, flat memory",
                met=ratio >= 0.30 and flat,
                notes=(
                    f"peak traced memory {big_peak / 1e6:.1f} MB at {n:,} events vs "
                    f"{small_peak / 1e6:.1f} MB at {max(n // 10, 50_000):,} "
                    f"({'flat' if flat else 'GROWS'})"
                ),
            )
        )
    return results
