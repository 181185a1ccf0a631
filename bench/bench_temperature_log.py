"""A 30-day temperature log at one reading a minute (43,200 rows, issue 19, SPEC §14),
on SQLite and PostgreSQL.

Figure: the whole service, as the API runs it: ``logistics.services.upload_log`` parses
the CSV (``timestamp,temperature_c``, every line checked), summarises it (excursions,
gaps), stores the log's audited row and the readings (one executemany) and commits with
its audit event. Baseline: the same bytes parsed with bare ``csv`` (times by
``datetime.fromisoformat``, temperatures by ``float``) and inserted by hand into the same
table with one ``executemany`` in one transaction, in the same run on the same database.
Target: ratio <= 2.0. Each side runs ``repeat`` times, alternately, on a shipment of its
own; the medians are compared.
"""

from __future__ import annotations

import csv
import io
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, text

from bench.bench_export import PASSWORD
from bench.common import Result, postgres_available, scratch_database
from gmp_mes.audit import Actor
from gmp_mes.db import Database, UTCDateTime

TARGET = 2.0
START = datetime(2026, 3, 1, tzinfo=UTC)

HAND_INSERT = text(
    "INSERT INTO temperature_reading (shipment_id, seq, at, c) VALUES (:shipment_id, :seq, "
    ":at, :c)").bindparams(bindparam("at", type_=UTCDateTime()))


def thirty_days(rows: int) -> bytes:
    """A logger's export: one reading a minute, a 20-minute excursion and a lost hour."""
    lines = ["timestamp,temperature_c"]
    for n in range(rows):
        if 20_000 <= n < 20_060:
            continue  # the logger's battery: an hour without readings (a gap)
        c = -120.0 if 10_000 <= n < 10_020 else -180.0 + (n % 7) * 0.5
        lines.append(f"{(START + timedelta(minutes=n)).strftime('%Y-%m-%dT%H:%M:%SZ')},{c}")
    return ("\n".join(lines) + "\n").encode()


def _setup(db: Database, shipments: int) -> int:
    from gmp_mes import accounts
    from gmp_mes.migrate import target_metadata

    target_metadata()
    with db.transaction(actor=Actor.system("bench")) as s:
        accounts.create_site(s, "CLEAN1", kind="manufacturing", name="Plant", timezone="UTC")
        accounts.create_site(s, "HOSP1", kind="treatment", name="Hospital", timezone="UTC")
        user = accounts.create_user(s, "shipper", password=PASSWORD, roles=["operator"],
                                    site_code="CLEAN1", full_name="Bench Shipper")
        user_id = user.id
    with db.engine.begin() as c:
        c.execute(text(
            "INSERT INTO shipment (shipment_id, from_site, to_site, min_c, max_c, status, "
            "shipped_by, shipped_at) VALUES (:id, 'CLEAN1', 'HOSP1', -196, -150, "
            "'in_transit', :u, :t)").bindparams(bindparam("t", type_=UTCDateTime())),
            [{"id": f"SHP-{n:06d}", "u": user_id, "t": START} for n in range(1, shipments + 1)])
    return user_id


def measure(backend: str, *, rows: int, repeat: int) -> list[Result]:
    from gmp_mes.models import User
    from logistics import services

    data = thirty_days(rows)
    with scratch_database(backend) as db:
        user_id = _setup(db, 2 * repeat + 2)
        ids = iter(f"SHP-{n:06d}" for n in range(1, 2 * repeat + 3))

        def ours() -> Any:
            with db.transaction(actor=Actor("shipper", user_id, "Bench Shipper")) as s:
                user = s.get(User, user_id)
                assert user is not None
                return services.log_summary(services.upload_log(s, next(ids), data=data,
                                                                user=user))

        def hand() -> None:
            shipment_id = next(ids)
            reader = csv.reader(io.StringIO(data.decode(), newline=""))
            next(reader)
            fromiso = datetime.fromisoformat
            values = [{"shipment_id": shipment_id, "seq": n, "at": fromiso(stamp),
                       "c": float(c)} for n, (stamp, c) in enumerate(reader)]
            with db.engine.begin() as connection:
                connection.execute(HAND_INSERT, values)

        summary = ours()  # warm both, and check the answer
        assert summary is not None and summary.readings == rows - 60
        assert len(summary.excursions) == 1 and len(summary.gaps) == 1
        hand()
        mine, theirs = [], []
        for _ in range(repeat):
            begin = time.perf_counter()
            ours()
            mine.append((time.perf_counter() - begin) * 1000)
            begin = time.perf_counter()
            hand()
            theirs.append((time.perf_counter() - begin) * 1000)
        with db.engine.connect() as c:
            stored = c.execute(text("SELECT count(*) FROM temperature_reading")).scalar_one()
    figure, baseline = statistics.median(mine), statistics.median(theirs)
    return [Result(
        f"temperature log ({backend}): {rows - 60:,} readings", figure, "ms", baseline,
        "bare csv + fromisoformat + one executemany, one transaction",
        f"ratio <= {TARGET}", figure <= TARGET * baseline,
        f"median of {repeat}; upload_log: parse and check every line, summary (1 excursion, "
        f"1 gap), audited log row, readings by executemany, commit; {stored:,} rows stored")]


def run(args: Any) -> list[Result]:
    sizes = dict(rows=4_320, repeat=3) if args.quick else dict(rows=43_260, repeat=7)
    results = measure("sqlite", **sizes)
    if postgres_available():
        results += measure("postgresql", **sizes)
    return results
