"""QA release: the locked release transaction and the release queue (issue 6).

Figures, on SQLite and (when reachable) PostgreSQL:
- release: one release decision (batch lock, every SPEC §5 condition, signature, items
  and batch status) against the baseline of one signed QC result on the same batch
  size (a comparable signed write). Target: under 250 ms, interactive at the QA desk.
- release queue: building GET /qa/release-queue for N waiting batches, per batch,
  against the baseline of the QC overview alone of one batch (the queue adds the
  batch-side blockers). Target: the whole queue of N batches under 1 s.
"""

from __future__ import annotations

import statistics
import time
from datetime import date, timedelta
from typing import Any

import processes.services as processes
from bench.common import Result, postgres_available, scratch_database
from gmp_mes import accounts
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.signatures import SignatureInput

PASSWORD = "bench-password-123"


def _value(param: Any) -> Any:
    from processes.definitions import ParamType

    if param.type == ParamType.BOOLEAN:
        return True if param.expected is None else param.expected
    if param.type == ParamType.TEXT:
        return "LOT-2611-A"
    if param.min is not None and param.max is not None:
        return (param.min + param.max) / 2
    return param.min * 2 if param.min is not None else param.max - 1


def _passing(spec: Any) -> dict[str, Any]:
    if spec.accept is not None:
        return {"outcome": spec.accept}
    if spec.min is not None and spec.max is not None:
        return {"value": (spec.min + spec.max) / 2}
    return {"value": spec.min * 2} if spec.min is not None else {"value": spec.max / 2}


def _ship_to_plant(s: Any, item_id: str, ids: dict[str, int]) -> None:
    """Shipped by the apheresis site, received at the plant: a batch starts only then."""
    from gmp_mes.models import User
    from identity import services as identity

    actor = s.info["actor"]
    s.info["actor"] = Actor("april", ids["april"], "April")
    identity.record_custody(s, item_id, action="ship", site="CLEAN1",
                            user=s.get(User, ids["april"]))
    s.info["actor"] = Actor("olga", ids["olga"], "Olga")
    identity.record_custody(s, item_id, action="receive", site="CLEAN1",
                            user=s.get(User, ids["olga"]))
    s.info["actor"] = actor


def _setup(app: Any, n: int) -> tuple[dict[str, int], list[str]]:
    from batches import services
    from identity import services as identity
    from qc import services as qc

    db = app.extensions["gmp_mes.db"]
    ids: dict[str, int] = {}
    with app.app_context(), db.transaction(actor=Actor.system("bench")) as s:
        for code, kind in (("CLEAN1", "manufacturing"), ("HOSP1", "treatment"),
                           ("APH1", "collection")):
            accounts.create_site(s, code, kind=kind, name=code)
        for name, role, site in (("olga", "operator", "CLEAN1"), ("oscar", "operator", "CLEAN1"),
                                 ("quentin", "qc", "CLEAN1"), ("quinn", "qa", "CLEAN1"),
                                 ("clara", "clinician", "HOSP1"), ("april", "clinician", "APH1")):
            ids[name] = accounts.create_user(
                s, name, password=PASSWORD, roles=[role], site_code=site,
                full_name=name.title()).id
        processes.load_process_definitions(s)
        processes.approve_process(s, "CART-AUTO", 1, user_id=ids["quinn"],
                                 signature=SignatureInput(PASSWORD, "approved"))
    numbers = []
    for i in range(n):
        with app.app_context(), db.transaction(actor=Actor("olga", ids["olga"], "Olga")) as s:
            coi = identity.enrol_patient(s, given_name="Ada", family_name=f"L{i}",
                                         date_of_birth=date(1980, 1, 1), mrn=f"M{i:05d}",
                                         treatment_site="HOSP1").coi_id
            item = identity.record_collection(s, coi_id=coi, site="APH1", volume_ml=200.0,
                                              collected_at=utcnow() - timedelta(hours=1))
            _ship_to_plant(s, item.item_id, ids)
            number = services.start_batch(s, item_id=item.item_id,
                                          user_id=ids["olga"]).batch_number
            definition = services.definition_of_batch(services.get_batch(s, number))
            for step in definition.steps:
                values = {p.code: _value(p) for p in step.parameters}
                services.record_step(
                    s, number, step.code, values=values, user_id=ids["olga"],
                    signature=SignatureInput(PASSWORD, "performed"),
                    verifier=services.VerifierInput("oscar", PASSWORD)
                    if step.critical else None)
            for spec in services.qc_specs(s, number):
                if spec.test == "potency":
                    continue  # left for the baseline measurement
                qc.record_result(s, number, test=spec.test, user_id=ids["quentin"],
                                 signature=SignatureInput(PASSWORD, "performed"),
                                 **_passing(spec))
            numbers.append(number)
    return ids, numbers


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _measure(backend: str, n: int) -> list[Result]:
    from batches import services as batches
    from gmp_mes.app import create_app
    from qc import services as qc

    with scratch_database(backend) as scratch:
        app = create_app({"database_url": scratch.url, "instance_path": "/tmp/gmp-bench-qc",
                          "secret_key": "bench"})
        db = app.extensions["gmp_mes.db"]
        ids, numbers = _setup(app, n)
        analyst = Actor("quentin", ids["quentin"], "Quentin")
        qa = Actor("quinn", ids["quinn"], "Quinn")

        queue_s = []
        overview_s = []
        for _ in range(3):
            with app.app_context(), db.transaction(actor=qa) as s:
                began = time.perf_counter()
                queue = qc.release_queue(s)
                queue_s.append(time.perf_counter() - began)
                began = time.perf_counter()
                qc.qc_overview(s, numbers[0])
                overview_s.append(time.perf_counter() - began)
        assert len(queue) == n

        result_s, release_s = [], []
        for number in numbers:
            with app.app_context(), db.transaction(actor=analyst) as s:
                spec = next(q for q in batches.qc_specs(s, number) if q.test == "potency")
                began = time.perf_counter()
                qc.record_result(s, number, test="potency", user_id=ids["quentin"],
                                 signature=SignatureInput(PASSWORD, "performed"),
                                 **_passing(spec))
                s.flush()
            result_s.append(time.perf_counter() - began)
            began = time.perf_counter()
            with app.app_context(), db.transaction(actor=qa) as s:
                qc.release_batch(s, number, user_id=ids["quinn"],
                                 signature=SignatureInput(PASSWORD, "released"))
            release_s.append(time.perf_counter() - began)
        app.extensions["gmp_mes.db"].dispose()
    release_ms, result_ms = _median_ms(release_s), _median_ms(result_s)
    queue_ms = _median_ms(queue_s)
    per_batch = queue_ms / n
    overview_ms = _median_ms(overview_s)
    notes = f"{backend}, {n} batches awaiting release, median"
    return [
        Result(f"release: one release decision ({backend})", release_ms, "ms", result_ms,
               "one signed QC result (incl. commit)", "< 250 ms", release_ms < 250, notes),
        Result(f"release: queue per batch ({backend})", per_batch, "ms", overview_ms,
               "QC overview of one batch", f"queue of {n} < 1000 ms", queue_ms < 1000,
               f"{notes}; whole queue {queue_ms:.0f} ms"),
    ]


def run(args: Any) -> list[Result]:
    n = 4 if args.quick else 40
    results = _measure("sqlite", n)
    if postgres_available():
        results += _measure("postgresql", n)
    return results
