"""The recall over ten years of data (issue 17, SPEC §11 where-used): 5,000 lots,
20,000 batches (40,000 final-product bags, a quarter of them administered) and 1,000,000
lot uses, on SQLite and PostgreSQL.

Figures: the recall's one statement (``materials.services.where_used_statement``: lot uses
grouped by batch, outer-joined to identity's final-product query as a subquery), and the
whole service ``where_used`` (the lot, that statement, the answer as dataclasses).
Baseline: the same answer (the same rows, typed alike) from one hand-written SQL query, in
the same run on the same database. Target: ratio <= 2.0 for the statement; the service's
ratio is reported beside it. The data are bulk-inserted with Core
``executemany`` (no audit events: the query reads only the records).
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Numeric, text

from bench.bench_export import PASSWORD
from bench.common import Result, postgres_available, scratch_database
from gmp_mes.audit import Actor
from gmp_mes.db import Database, UTCDateTime

TARGET = 2.0
START = datetime(2016, 1, 1, tzinfo=UTC)
DAYS = 3650

HAND_WRITTEN = text("""
SELECT u.batch_number, u.coi_id, u.quantity, u.uses, u.first_used_at, u.last_used_at,
       i.item_id, i.status, i.coi_id AS item_coi_id, i.site_code, i.expires_at,
       a.administered_at, a.site_code AS administered_site
FROM (SELECT batch_number, coi_id, SUM(quantity) AS quantity, COUNT(id) AS uses,
             MIN(used_at) AS first_used_at, MAX(used_at) AS last_used_at
      FROM lot_use WHERE lot_id = :lot_id GROUP BY batch_number, coi_id) AS u
LEFT OUTER JOIN item AS i ON i.batch_number = u.batch_number AND i.kind = 'final_product'
LEFT OUTER JOIN administration AS a ON a.item_id = i.item_id
ORDER BY a.administered_at IS NULL, a.administered_at, u.batch_number, i.item_id
""").columns(  # the same Python values as the service's answer (exact decimals, aware UTC)
    quantity=Numeric(15, 6), first_used_at=UTCDateTime(), last_used_at=UTCDateTime(),
    expires_at=UTCDateTime(), administered_at=UTCDateTime())


def _chunks(rows: list[dict[str, Any]], size: int = 20_000) -> Any:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def _insert(db: Database, table: str, rows: list[dict[str, Any]]) -> None:
    from gmp_mes.db import Base

    target = Base.metadata.tables[table]
    for chunk in _chunks(rows):
        with db.engine.begin() as c:
            c.execute(target.insert(), chunk)


def populate(db: Database, *, lots: int, batches: int, uses_per_batch: int) -> None:
    """Ten years of a plant: patients, batches' bags (half of them with two), lots and
    their uses (each batch uses lots received around its own time)."""
    from gmp_mes import accounts
    from gmp_mes.migrate import target_metadata

    target_metadata()
    rng = random.Random(17)
    with db.transaction(actor=Actor.system("bench")) as s:
        accounts.create_site(s, "CLEAN1", kind="manufacturing", name="Plant", timezone="UTC")
        accounts.create_site(s, "HOSP1", kind="treatment", name="Hospital", timezone="UTC")
        user = accounts.create_user(s, "recaller", password=PASSWORD,
                                    roles=["operator"], site_code="CLEAN1",
                                    full_name="Bench")
        user_id = user.id
    with db.engine.begin() as c:
        signature_id = c.execute(text(
            "INSERT INTO signature (user_id, username, printed_name, meaning, signed_at, "
            "entity_type, entity_id, content_digest) VALUES (:u, 'bench', 'Bench', "
            "'administered', :t, 'bench', 'bench', 'x') RETURNING id"),
            {"u": user_id, "t": START}).scalar_one()
    _insert(db, "material", [{"code": f"M{m:03d}", "name": f"Material {m}", "kind": "reagent",
                              "unit": "mL", "created_at": START} for m in range(50)])
    lot_rows = [{
        "lot_id": f"LOT-{n + 1:06d}", "material_code": f"M{n % 50:03d}", "supplier": "S",
        "supplier_lot": f"SL{n}", "expires_at": START + timedelta(days=n * DAYS // lots + 400),
        "quantity": Decimal("1000000"), "remaining": Decimal("500000"), "status": "released",
        "site_code": "CLEAN1", "received_by": user_id,
        "received_at": START + timedelta(days=n * DAYS // lots)} for n in range(lots)]
    _insert(db, "material_lot", lot_rows)
    patients, items, verifications, administrations, uses = [], [], [], [], []
    for b in range(batches):
        at = START + timedelta(days=b * DAYS / batches)
        coi = f"A9999{b:08d}X"
        number = f"CART-AUTO-{b + 1:06d}"
        patients.append({"coi_id": coi, "given_name": "G", "family_name": f"F{b}",
                         "date_of_birth": date(1970, 1, 1), "mrn": f"MRN{b}",
                         "treatment_site": "HOSP1", "enrolled_at": at})
        for bag in range(1 + b % 2):
            item_id = f"ITM-{b:06d}{bag:02d}"
            administered = rng.random() < 0.25
            items.append({"item_id": item_id, "kind": "final_product",
                          "status": "administered" if administered else "released",
                          "coi_id": coi, "batch_number": number, "site_code": "HOSP1",
                          "expires_at": at + timedelta(days=270), "created_at": at})
            if administered:
                verifications.append({
                    "id": len(verifications) + 1, "item_id": item_id, "patient_coi_id": coi,
                    "product_coi_id": coi, "patient_payload": "P", "product_payload": "P",
                    "match": True, "reasons": "[]", "warnings": "[]",
                    "purpose": "administration", "user_id": user_id, "site_code": "HOSP1",
                    "verified_at": at + timedelta(days=20)})
                administrations.append({
                    "item_id": item_id, "coi_id": coi, "verification_id": len(verifications),
                    "signature_id": signature_id, "user_id": user_id, "site_code": "HOSP1",
                    "administered_at": at + timedelta(days=20), "warnings": "[]"})
        # The lots of its time: received within the year before, one per material in use.
        window = max(1, lots // 10)
        first = min(max(0, int(b * lots / batches) - window), lots - uses_per_batch)
        for k, n in enumerate(rng.sample(range(first, min(lots, first + window
                                                          + uses_per_batch)),
                                         uses_per_batch)):
            uses.append({"lot_id": f"LOT-{n + 1:06d}", "material_code": f"M{n % 50:03d}",
                         "batch_number": number, "coi_id": coi, "step_record_id": b * 100 + k,
                         "step_code": "activation", "quantity": Decimal("1.5"),
                         "used_by": user_id, "used_at": at})
    for table, rows in (("patient", patients), ("item", items),
                        ("bedside_verification", verifications),
                        ("administration", administrations), ("lot_use", uses)):
        _insert(db, table, rows)
    with db.engine.begin() as c:
        c.execute(text("ANALYZE"))


def _median_ms(fn: Any, lot_ids: list[str]) -> float:
    times = []
    for lot_id in lot_ids:
        begin = time.perf_counter()
        fn(lot_id)
        times.append((time.perf_counter() - begin) * 1000)
    return statistics.median(times)


def measure(backend: str, *, lots: int, batches: int, uses_per_batch: int,
            repeat: int) -> list[Result]:
    from materials import services

    with scratch_database(backend) as db:
        populate(db, lots=lots, batches=batches, uses_per_batch=uses_per_batch)
        probe = random.Random(3).sample([f"LOT-{n + 1:06d}" for n in range(lots)], repeat)
        session = db.session()
        try:
            def ours(lot_id: str) -> Any:
                return services.where_used(session, lot_id)

            with db.engine.connect() as connection:
                def hand(lot_id: str) -> Any:
                    return connection.execute(HAND_WRITTEN, {"lot_id": lot_id}).all()

                for lot_id in probe[:3]:  # the same answer, row for row
                    answer = ours(lot_id)
                    rows = hand(lot_id)
                    flat = [(b.batch_number, item.item_id if item else None)
                            for b in answer.batches for item in (b.items or [None])]
                    grouped: dict[str, list[str | None]] = {}
                    for r in rows:  # grouped by batch in the order of first appearance
                        grouped.setdefault(r.batch_number, []).append(r.item_id)
                    assert flat == [(n, i) for n, ids in grouped.items() for i in ids], lot_id
                statement = services.where_used_statement()

                def query(lot_id: str) -> Any:
                    return connection.execute(statement, {"lot_id": lot_id}).all()

                ours(probe[0]), hand(probe[0]), query(probe[0])  # warm them
                figure = _median_ms(query, probe)
                baseline = _median_ms(hand, probe)
                service = _median_ms(ours, probe)
                total = connection.execute(text("SELECT count(*) FROM lot_use")).scalar_one()
        finally:
            session.close()
    return [
        Result(f"where-used ({backend}): {lots:,} lots, {batches:,} batches", figure, "ms",
               baseline, "the same answer by one hand-written SQL query",
               f"ratio <= {TARGET}", figure <= TARGET * baseline,
               f"median of {repeat} lots; {total:,} lot uses; the recall's one statement "
               "vs the hand-written one, rows typed alike"),
        Result(f"where-used service ({backend})", service, "ms", baseline,
               "the same answer by one hand-written SQL query", "reported", True,
               "the lot lookup, the statement and the answer as dataclasses"),
    ]


def run(args: Any) -> list[Result]:
    sizes = (dict(lots=500, batches=2_000, uses_per_batch=10, repeat=20) if args.quick else
             dict(lots=5_000, batches=20_000, uses_per_batch=50, repeat=50))
    results = measure("sqlite", **sizes)
    if postgres_available():
        results += measure("postgresql", **sizes)
    return results
