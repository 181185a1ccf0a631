"""Recording a step on a batch with 1,000 earlier step records vs 10 (issue 15).

Target: the 1,000-record batch records its next expansion day within 1.5x the time of
the 10-record one (recording is O(1) in the number of earlier records). Both batches
are built the same way (bench_export's batch, stopped at the first expansion day), the
earlier records beyond it inserted directly with the columns the service writes.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.bench_export import PASSWORD, _build_batch
from bench.common import Result
from gmp_mes import migrate
from gmp_mes.audit import Actor
from gmp_mes.signatures import SignatureInput

TARGET = 1.5


def _grow(app: Any, number: str, earlier: int) -> None:
    """Expansion records until the batch holds ``earlier`` step records."""
    from batches import services
    from batches.models import StepRecord

    db = app.extensions["gmp_mes.db"]
    with app.app_context(), db.transaction(actor=Actor.system("bench")) as s:
        batch = services.get_batch(s, number)
        have = list(s.scalars(select(StepRecord).where(StepRecord.batch_id == batch.id)))
        first = next(r for r in have if r.step_code == "expansion")
        rows = [{
            "batch_id": batch.id, "batch_number": number, "step_code": "expansion",
            "step_index": first.step_index, "occurrence": n, "version": 1,
            "values_json": first.values_json, "results_json": first.results_json,
            "in_limits": True, "performed_at": first.performed_at,
            "recorded_by": first.recorded_by, "signature_id": first.signature_id,
        } for n in range(2, earlier - len(have) + 2)]
        if rows:
            s.execute(StepRecord.__table__.insert(), rows)


def _recording_ms(earlier: int, repeat: int) -> float:
    from batches import services
    from gmp_mes.app import create_app
    from gmp_mes.models import User

    with tempfile.TemporaryDirectory() as folder:
        app = create_app({"database_url": f"sqlite:///{folder}/bench.sqlite",
                          "instance_path": str(Path(folder) / "instance"),
                          "secret_key": "bench"})
        db = app.extensions["gmp_mes.db"]
        migrate.upgrade(db.engine)
        number = _build_batch(app, 1, until="expansion")
        _grow(app, number, earlier)
        with app.app_context(), db.transaction(actor=Actor.system("bench")) as s:
            olga = s.scalar(select(User.id).where(User.username == "olga"))
            values = json.loads(services.all_records(s, services.get_batch(s, number))[-1]
                                .values_json)
        sig = SignatureInput(password=PASSWORD, meaning="performed")

        def record() -> None:
            with app.app_context(), db.transaction(actor=Actor("olga", olga, "Olga")) as s:
                services.record_step(s, number, "expansion", values=values, user_id=olga,
                                     signature=sig)

        record()  # warm-up
        samples = []
        for _ in range(repeat):
            began = time.perf_counter()
            record()
            samples.append((time.perf_counter() - began) * 1000)
        db.dispose()
    return statistics.median(samples)


def run(args: Any) -> list[Result]:
    repeat = 5 if args.quick else 25
    small = _recording_ms(10, repeat)
    large = _recording_ms(1000, repeat)
    return [Result(
        "steps: record a step at 1,000 vs 10 records", large, "ms", small,
        "recording at 10 earlier records", f"ratio <= {TARGET}", large <= TARGET * small,
        f"median of {repeat} expansion days recorded on SQLite, each its own transaction",
    )]
