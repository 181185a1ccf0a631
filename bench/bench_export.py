"""Executed batch record PDF export of a batch with 30 days of expansion records.

Target (issue 5): under 1 second. Baselines measured in the same run: the JSON
export of the same batch (same database reads, no rendering) and a bare
reportlab document with the same number of pages (rendering cost alone).
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate

import processes.services as processes
from bench.common import Result
from gmp_mes import accounts, migrate
from gmp_mes.audit import Actor
from gmp_mes.clock import clock
from gmp_mes.signatures import SignatureInput

PASSWORD = "bench-password-123"


def _build_batch(app: Any, days: int, until: str | None = None) -> str:
    """A batch recorded through every step (``days`` expansion records), or only up to
    and including step ``until``."""
    from batches import services
    from identity import services as identity
    from processes.definitions import ParamType

    db = app.extensions["gmp_mes.db"]
    sig = SignatureInput(password=PASSWORD, meaning="performed")
    ids: dict[str, int] = {}
    with app.app_context(), db.transaction(actor=Actor.system("bench")) as s:
        accounts.create_site(s, "CLEAN1", kind="manufacturing", name="Cleanroom")
        accounts.create_site(s, "HOSP1", kind="treatment", name="Hospital")
        accounts.create_site(s, "APH1", kind="collection", name="Apheresis")
        for name, role, site in (("olga", "operator", "CLEAN1"), ("oscar", "operator", "CLEAN1"),
                                 ("quinn", "qa", "CLEAN1"), ("clara", "clinician", "HOSP1"),
                                 ("april", "clinician", "APH1")):
            ids[name] = accounts.create_user(s, name, password=PASSWORD, roles=[role],
                                             site_code=site, full_name=name.title()).id
        processes.load_process_definitions(s)
        processes.approve_process(s, "CART-AUTO", 1, user_id=ids["quinn"],
                                 signature=SignatureInput(PASSWORD, "approved"))
        coi_id = identity.enrol_patient(
            s, given_name="Grace", family_name="Hopper", date_of_birth=date(1968, 12, 9),
            mrn="B0001", treatment_site="HOSP1").coi_id
        start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
        clock.freeze(start)
        item = identity.record_collection(s, coi_id=coi_id, collected_at=start - timedelta(
            hours=2), site="APH1", volume_ml=230.0).item_id
        # Shipped by the apheresis site, received at the plant: a batch starts only then.
        from gmp_mes.models import User

        for action, who in (("ship", "april"), ("receive", "olga")):
            identity.record_custody(s, item, action=action, site="CLEAN1",
                                    user=s.get(User, ids[who]))
        number = services.start_batch(s, item_id=item, user_id=ids["olga"]).batch_number
        definition = services.definition_of_batch(services.get_batch(s, number))
        verifier = services.VerifierInput("oscar", PASSWORD)
        for step in definition.steps:
            runs = days if step.repeatable else 1
            for day in range(runs):
                values: dict[str, Any] = {}
                for p in step.parameters:
                    if p.type == ParamType.BOOLEAN:
                        values[p.code] = True
                    elif p.type == ParamType.TEXT:
                        values[p.code] = "LOT-2603-A"
                    elif p.min is not None and p.max is not None:
                        values[p.code] = (p.min + p.max) / 2
                    elif p.min is not None:
                        values[p.code] = p.min * 2
                    else:
                        values[p.code] = p.max - 1
                if step.code == "expansion":
                    values["viable_cells"] = 1.5e8 * 1.35 ** day
                    values["viability_pct"] = 68.0 if day == 3 else 95.0 - day * 0.4
                if step.creates:
                    values["bags"] = 3
                services.record_step(s, number, step.code, values=values, user_id=ids["olga"],
                                     signature=sig, verifier=verifier if step.critical else None)
                clock.advance(timedelta(days=1) if step.repeatable else timedelta(hours=3))
            if step.code == until:
                break
        for deviation in services.deviations_of(s, services.get_batch(s, number)):
            services.assess_deviation(s, deviation.number, assessment="single low count",
                                      user_id=ids["quinn"],
                                      signature=SignatureInput(PASSWORD, "reviewed"))
    clock.unfreeze()
    return number


def _time(fn: Any, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def _bare_reportlab(pages: int) -> bytes:
    styles = getSampleStyleSheet()
    buffer = io.BytesIO()
    flow: list[Any] = []
    for n in range(pages):
        flow += [Paragraph(f"Page {n + 1} line {i}", styles["BodyText"]) for i in range(30)]
        flow.append(PageBreak())
    SimpleDocTemplate(buffer, pagesize=landscape(A4)).build(flow)
    return buffer.getvalue()


def run(args: Any) -> list[Result]:
    from batches import export
    from gmp_mes.app import create_app

    days = 5 if args.quick else 30
    repeat = 3 if args.quick else 7
    with tempfile.TemporaryDirectory() as folder:
        app = create_app({"database_url": f"sqlite:///{folder}/bench.sqlite",
                          "instance_path": str(Path(folder) / "instance"),
                          "secret_key": "bench"})
        db = app.extensions["gmp_mes.db"]
        migrate.upgrade(db.engine)
        number = _build_batch(app, days)

        def pdf() -> bytes:
            with app.app_context(), db.transaction(actor=Actor.system("bench")) as s:
                return export.export_batch(s, number, "pdf")[0]

        def as_json() -> bytes:
            with app.app_context(), db.transaction(actor=Actor.system("bench")) as s:
                return export.export_batch(s, number, "json")[0]

        document = pdf()  # warm-up: fonts registered, definitions parsed and cached
        pages = len(pdfium.PdfDocument(document))
        pdf_ms = _time(pdf, repeat)
        json_ms = _time(as_json, repeat)
        bare_ms = _time(lambda: _bare_reportlab(pages), repeat)
        db.dispose()
    notes = (f"{days} expansion records, {pages} pages, {len(document) // 1024} KiB, "
             f"median of {repeat} on SQLite")
    return [
        Result("export: batch record PDF vs JSON export", pdf_ms, "ms", json_ms,
               "JSON export of the same batch", "< 1000 ms", pdf_ms < 1000, notes),
        Result("export: batch record PDF vs bare reportlab", pdf_ms, "ms", bare_ms,
               f"bare reportlab document, {pages} pages", "< 1000 ms", pdf_ms < 1000, notes),
    ]
