"""Executed batch record export: every signature and deviation, readable by QA (issue 5)."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pypdfium2 as pdfium
import pytest

from batches import export, services
from batches.record import executed_record
from gmp_mes.clock import clock, utcnow
from tests.conftest import PASSWORD
from tests.test_batches_fixtures import Plant, bad_value, good_values, plant_fixture, sign  # noqa: F401

ARTIFACTS = Path(__file__).parent / "artifacts"



def shown(signature: dict) -> str:
    """A signature as the PDF prints it (issue 15): the site's local time first, UTC
    after; the JSON keeps the UTC manifestation."""
    from gmp_mes import localtime

    return localtime.signature_line(signature, localtime.zone("Europe/Paris"), with_utc=True)


def pdf_text(data: bytes) -> str:
    document = pdfium.PdfDocument(data)
    try:
        return "\n".join(page.get_textpage().get_text_range() for page in document)
    finally:
        document.close()


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def complete_batch_with_deviation_and_correction(plant: Plant) -> str:
    number = plant.start()
    plant.run_to(number, "transduction")
    expansion = plant.definition(number).step("expansion")
    clock.freeze(utcnow())
    for day, cells in enumerate((2.0e8, 4.5e8, 9.0e8, 1.6e9), start=1):
        clock.advance(timedelta(days=1))
        viability = 65.0 if day == 2 else 92.0 - day
        plant.record(number, "expansion", {"viable_cells": cells, "viability_pct": viability})
    fixed = good_values(expansion) | {"viable_cells": 1.7e9, "viability_pct": 88.0}
    with plant.tx() as s:
        services.correct_step(s, number, "expansion", values=fixed, occurrence=4,
                              reason="count repeated after mixing", user_id=plant.operator.user_id,
                              signature=sign())
        [deviation] = services.deviations_of(s, services.get_batch(s, number))
        ref = deviation.number
    with plant.tx(plant.qa) as s:
        services.assess_deviation(s, ref, assessment="Single low reading, recovered next day",
                                  user_id=plant.qa.user_id, signature=sign(meaning="reviewed"))
        services.close_deviation(s, ref, closure="No impact on product quality",
                                 user_id=plant.qa.user_id, signature=sign(meaning="approved"))
    fill = plant.definition(number).step("fill")
    for code in ("harvest", "fill", "cryopreservation"):
        values = good_values(fill) | {"bags": 2} if code == "fill" else None
        plant.record(number, code, values)
    return number


@pytest.mark.requirement("21 CFR 11.50")
def test_pdf_contains_every_signature_and_deviation(plant: Plant) -> None:
    number = complete_batch_with_deviation_and_correction(plant)
    with plant.tx(plant.qa) as s:
        data = executed_record(s, number)
        pdf, mimetype = export.export_batch(s, number, "pdf")
    assert mimetype == "application/pdf"
    text = squash(pdf_text(pdf))
    manifestations: list[str] = []
    for step in data["steps"]:
        for rec in step["records"] + step["superseded"]:
            manifestations.append(shown(rec["signature"]))
            if rec["verifier_signature"]:
                manifestations.append(shown(rec["verifier_signature"]))
    for dev in data["deviations"]:
        manifestations.append(shown(dev["assessment_signature"]))
        manifestations.append(shown(dev["closure_signature"]))
        assert dev["number"] in text
        assert squash(dev["description"]) in text
    manifestations.append(shown(data["process"]["approval_signature"]))
    assert len(manifestations) > 15
    for line, times in Counter(manifestations).items():
        assert text.count(squash(line)) >= times, line  # every signature, each time
    # header, limits, pass/fail, correction and the superseded value stay readable
    for expected in (number, data["coi_id"], "CART-AUTO version 1", "FAIL - deviation",
                     "70 - 100 %", "count repeated after mixing", "Superseded version 1",
                     "Expansion curve", "Genealogy", "Custody trail", "Release decision",
                     "Ph. Eur. 2.6.27", "verified", "awaiting_release"):
        assert expected in text, expected
    for item_id in services_items(plant, number):
        assert item_id in text
    anchor = re.search(r"Audit trail anchor .* generated: (\d+:[0-9a-f]{64})\.", text)
    assert anchor and anchor.group(1) == data["audit_head"], "no audit anchor in the PDF"


def services_items(plant: Plant, number: str) -> list[str]:
    with plant.tx() as s:
        return services.final_product_item_ids(s, number)


def test_pdf_page_renders_to_a_readable_image(plant: Plant) -> None:
    number = complete_batch_with_deviation_and_correction(plant)
    with plant.tx(plant.qa) as s:
        pdf, _ = export.export_batch(s, number, "pdf")
    document = pdfium.PdfDocument(pdf)
    try:
        assert len(document) >= 2
        image = document[0].render(scale=1.5).to_pil().convert("L")
    finally:
        document.close()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "batch-record.pdf").write_bytes(pdf)
    image.save(ARTIFACTS / "batch-record-page1.png")
    histogram = image.histogram()
    dark = sum(histogram[:100]) / (image.width * image.height)
    assert image.width > 1000 and 0.005 < dark < 0.5  # text on a white page, not blank


def test_json_export_is_complete_and_machine_readable(plant: Plant) -> None:
    number = complete_batch_with_deviation_and_correction(plant)
    with plant.tx(plant.qa) as s:
        raw, mimetype = export.export_batch(s, number, "json")
    data = json.loads(raw)
    assert mimetype == "application/json"
    assert data["status"] == "awaiting_release"
    assert [p["viable_cells"] for p in data["expansion_curve"]] == [2.0e8, 4.5e8, 9.0e8, 1.7e9]
    assert len(data["genealogy"]) == 3  # starting material + 2 bags
    bags = [g for g in data["genealogy"] if g["kind"] == "final_product"]
    assert all(g["parents"] == [data["starting_item_id"]] for g in bags)
    assert data["custody"] and {e["action"] for e in data["custody"]} >= {"create"}
    assert data["patient"]["initials"] == "G.H."
    assert re.fullmatch(r"\d+:[0-9a-f]{64}", data["audit_head"])
    assert "MRN" not in raw.decode() and "Hopper" not in raw.decode()  # pseudonymised


def test_curve_charts(plant: Plant) -> None:
    """The expansion curve is drawn by gmp_mes.charts: cells and viability as images."""
    html = export.curve_html([
        {"day": 1.0, "viable_cells": 1e8, "viability": 95.0},
        {"day": 2.0, "viable_cells": 3e8, "viability": 91.0},
    ])
    assert html.count('<img class="chart curve" src="data:image/svg+xml;base64,') == 2
    assert "day 2: 3E8" in html and "day 2: 91 %" in html  # the alt texts
    assert "No expansion records" in export.curve_html([])


def test_empty_batch_exports(plant: Plant) -> None:
    number = plant.start()
    with plant.tx() as s:
        pdf, _ = export.export_batch(s, number, "pdf")
    assert "Not recorded." in pdf_text(pdf)
    assert PASSWORD not in pdf_text(pdf)


def test_out_of_limit_rows_are_flagged(plant: Plant) -> None:
    number = plant.start()
    receipt = plant.definition(number).step("receipt")
    values = good_values(receipt) | {"temperature_c": bad_value(receipt.parameter(
        "temperature_c"))}
    plant.record(number, "receipt", values)
    with plant.tx() as s:
        text = squash(pdf_text(export.export_batch(s, number, "pdf")[0]))
    assert "FAIL - deviation" in text and "2 - 8 °C" in text


def test_pdf_shows_qc_results_and_the_release_decision(plant: Plant, make_user) -> None:
    """With the qc domain: results, their signatures and QA's release in the record."""
    qc = pytest.importorskip("qc.services")
    analyst = make_user("quentin", "qc")
    number = complete_batch_with_deviation_and_correction(plant)
    with plant.tx(analyst) as s:
        for spec in services.qc_specs(s, number):
            if spec.accept is not None:
                kw = {"outcome": spec.accept}
            else:
                lo = spec.min if spec.min is not None else spec.max / 2
                hi = spec.max if spec.max is not None else spec.min * 2
                kw = {"value": (lo + hi) / 2}
            qc.record_result(s, number, test=spec.test, user_id=analyst.user_id,
                             signature=sign(), **kw)
    with plant.tx(plant.qa) as s:
        qc.release_batch(s, number, user_id=plant.qa.user_id,
                         signature=sign(meaning="released"))
    with plant.tx(plant.qa) as s:
        data = executed_record(s, number)
        text = squash(pdf_text(export.export_batch(s, number, "pdf")[0]))
    assert data["status"] == "released"
    for row in data["qc"]:
        assert row["status"] == "passed"
        for result in row["results"]:
            assert squash(shown(result["signature"])) in text
    release_signatures = [shown(v) for v in data["release"].values()
                          if isinstance(v, dict) and "manifestation" in v]
    assert release_signatures
    for line in release_signatures:
        assert squash(line) in text
    assert "Quentin (quentin)" in text and "released" in text


@pytest.mark.requirement("21 CFR 11.70")
def test_a_record_changed_behind_the_application_no_longer_matches_its_signature(
    plant: Plant,
) -> None:
    number = plant.start()
    plant.record(number, "receipt")
    corrected = good_values(plant.definition(number).step("receipt")) | {"temperature_c": 6.0}
    with plant.tx() as s:
        services.correct_step(s, number, "receipt", values=corrected, reason="typo",
                              user_id=plant.operator.user_id, signature=sign(),
                              verifier=services.VerifierInput(plant.operator2.username,
                                                              PASSWORD))
    with plant.tx() as s:
        data = executed_record(s, number)
    [step] = [x for x in data["steps"] if x["code"] == "receipt"]
    assert step["records"][0]["signature_binds"] is True
    assert step["superseded"][0]["signature_binds"] is True
    # Someone with database access bypasses the append-only guard and edits a value.
    from sqlalchemy import text

    with plant.db.engine.begin() as c:
        if c.dialect.name == "postgresql":
            c.execute(text("ALTER TABLE step_record DISABLE TRIGGER step_record_refuse_change"))
        else:
            c.execute(text("DROP TRIGGER step_record_refuse_update"))
        c.execute(text("UPDATE step_record SET values_json = replace(values_json, '6.0', '5.0')"
                       " WHERE version = 2"))
    with plant.tx() as s:
        data = executed_record(s, number)
        pdf = export.export_batch(s, number, "pdf")[0]
    [step] = [x for x in data["steps"] if x["code"] == "receipt"]
    assert step["records"][0]["signature_binds"] is False
    assert step["superseded"][0]["signature_binds"] is True
    assert "SIGNATURE DOES NOT MATCH THE RECORD" in squash(pdf_text(pdf))
