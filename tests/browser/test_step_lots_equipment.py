"""Issue 17 "Done when", in Chromium: a step is recorded by scanning a lot label and an
equipment label into its form (a keyboard-wedge scanner: it types, then Enter moves to
the next field); the check shows the expired lot's reason before anyone signs; with a
released lot in date the step is signed, and the record shows what it used.

The labels are printed as PNG and read with a real decoder (zxing-cpp): what is typed
into the form is what a scanner reads off the printed label."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from gmp_mes.clock import clock, utcnow
from gmp_mes.signatures import SignatureInput
from tests.browser.conftest import log_in, screenshot, submit
from tests.browser.test_batch_path import flash_text, scan_into, verdict
from tests.conftest import PASSWORD
from tests.test_batches_fixtures import Plant, good_values, plant_fixture  # noqa: F401

pytestmark = pytest.mark.requirement("Regulation (EC) 1394/2007 Art. 15")


def _signed(meaning: str) -> SignatureInput:
    return SignatureInput(password=PASSWORD, meaning=meaning)


def _read(png: bytes) -> str:
    """The payload a scanner reads off the printed label."""
    found = [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]
    assert len(found) == 1, found
    return found[0]


def _lot_label(plant: Plant, code: str, *, expires_in: timedelta) -> tuple[str, str]:
    """A received and released lot of ``code``, and its printed label as scanned."""
    from labels.services import PrintRequest
    from materials import services

    with plant.tx(plant.operator) as s:
        lot_id = services.receive_lot(s, code, supplier="Miltenyi Biotec",
                                      supplier_lot=f"{code}-{expires_in.days}",
                                      expires_at=utcnow() + expires_in, quantity=5,
                                      user_id=plant.operator.user_id).lot_id
    with plant.tx(plant.qa) as s:
        services.release_lot(s, lot_id, user_id=plant.qa.user_id, signature=_signed("released"))
    with plant.tx(plant.operator) as s:
        subject = services.lot_label_subject(s, lot_id, for_update=True)
        printed = services.print_lot_label(s, subject, PrintRequest(format="png"),
                                           user_id=plant.operator.user_id)
        png = printed.content
    return lot_id, _read(png)


@pytest.fixture(name="cleanroom")
def cleanroom_fixture(plant: Plant, make_user: Any) -> dict[str, Any]:
    """CART-AUTO v3 approved, the selection step's materials and equipment on record:
    an expired and an in-date lot of microbeads, a tubing set, the processing system."""
    from equipment import services as equipment
    from labels.services import PrintRequest
    from materials import services as materials

    clock.freeze(utcnow())  # before the first write: the trail never goes back (DEVELOPING)
    admin = make_user("adam", "admin")
    plant.approve(3)
    with plant.tx(plant.qa) as s:
        materials.create_material(s, code="CD4CD8-BEADS", name="CD4 and CD8 MicroBeads",
                                  kind="reagent", unit="vial", user_id=plant.qa.user_id)
        materials.create_material(s, code="TS-520", name="Closed tubing set",
                                  kind="consumable", unit="set", user_id=plant.qa.user_id)
    old_beads, old_beads_label = _lot_label(plant, "CD4CD8-BEADS", expires_in=timedelta(hours=1))
    beads, beads_label = _lot_label(plant, "CD4CD8-BEADS", expires_in=timedelta(days=120))
    tubing, tubing_label = _lot_label(plant, "TS-520", expires_in=timedelta(days=300))
    with plant.tx(admin) as s:
        equipment.register_equipment(s, equipment_id="CPS-01", type="closed_processing_system",
                                     name="Closed processing system 1", site_code="CLEAN1",
                                     user_id=admin.user_id, calibration_interval="P365D")
    with plant.tx(plant.operator) as s:
        equipment.record_event(s, "CPS-01", kind="calibrated", user_id=plant.operator.user_id,
                               signature=_signed("performed"))
        printed = equipment.print_equipment_label(s, "CPS-01", PrintRequest(format="png"),
                                                  user_id=plant.operator.user_id)
        system_label = _read(printed.content)
    number = plant.start()
    plant.record(number, "receipt")
    clock.advance(timedelta(hours=2))  # the first microbeads lot has expired meanwhile
    return {"batch": number, "old_beads": (old_beads, old_beads_label),
            "beads": (beads, beads_label), "tubing": (tubing, tubing_label),
            "system": system_label}


def test_a_step_is_recorded_by_scanning_lot_and_equipment_labels(
        page: Any, plant: Plant, cleanroom: dict[str, Any]) -> None:
    number = cleanroom["batch"]
    log_in(page, plant.operator)
    page.goto(f"/batches/{number}#selection")
    form = page.locator("section#selection > form.step-form")
    fields = "section#selection > form.step-form"
    # The scanner reads the expired lot first: Enter moves on to the next scan field
    # (it never posts a half-filled step).
    scan_into(page, f"{fields} input[name=lot_0]", cleanroom["old_beads"][1])
    assert page.evaluate("document.activeElement.name") == "lot_1"
    scan_into(page, f"{fields} input[name=lot_1]", cleanroom["tubing"][1])
    scan_into(page, f"{fields} input[name=eqp_0]", cleanroom["system"])
    submit(page, form.get_by_role("button", name="Check before signing"))
    verdict = page.locator("section#selection .check-result")
    assert "This step would be refused" in verdict.inner_text()
    reasons = verdict.locator(".check-reasons li").all_inner_texts()
    assert len(reasons) == 1 and cleanroom["old_beads"][0] in reasons[0], reasons
    assert "lot expired" in reasons[0].lower(), reasons
    screenshot(page, "step-check-expired-lot")

    # The operator takes the lot in date: a new scan replaces the old one in the field.
    form = page.locator("section#selection > form.step-form")
    scan_into(page, f"{fields} input[name=lot_0]", cleanroom["beads"][1])
    assert form.locator("input[name=lot_0]").input_value() == cleanroom["beads"][1]
    submit(page, form.get_by_role("button", name="Check before signing"))
    assert "is in order" in page.locator("section#selection .check-result").inner_text()

    form = page.locator("section#selection > form.step-form")
    step = plant.definition(number).step("selection")
    for name, value in good_values(step).items():
        form.locator(f"[name=v_{name}]").fill(str(value))
    form.get_by_label("Your password").fill(plant.operator.password)
    submit(page, form.get_by_role("button", name="Sign and record"))
    assert "step selection recorded and signed" in flash_text(page), flash_text(page)
    used = page.locator("section#selection .step-used").inner_text()
    for shown in (cleanroom["beads"][0], cleanroom["tubing"][0], "CPS-01"):
        assert shown in used, used
    assert cleanroom["old_beads"][0] not in used
    # The record's tables: the lots and the equipment the batch used.
    assert cleanroom["beads"][0] in page.locator("table.record-materials").inner_text()
    assert "CPS-01" in page.locator("table.record-equipment").inner_text()
    screenshot(page, "step-recorded-with-lots-and-equipment")


def test_the_scan_station_shows_a_lot_and_a_piece_of_equipment(
        page: Any, plant: Plant, cleanroom: dict[str, Any]) -> None:
    log_in(page, plant.operator)
    page.goto("/scan")
    # The expired lot: STOP, with the lot, its status and its expiry (each scan posts and
    # loads the verdict page: wait for it, never read the page before).
    with page.expect_navigation():
        scan_into(page, "#payload", cleanroom["old_beads"][1])
    shown = verdict(page)
    assert shown.startswith("STOP") and "lot_expired" in shown, shown
    facts = page.locator("dl.id-facts").inner_text()
    assert cleanroom["old_beads"][0] in facts and "released" in facts, facts
    screenshot(page, "scan-station-expired-lot")
    # The lot in date and the processing system: OK, each named with its status.
    for label, name in ((cleanroom["beads"][1], cleanroom["beads"][0]),
                        (cleanroom["system"], "CPS-01")):
        with page.expect_navigation():
            scan_into(page, "#payload", label)
        assert verdict(page) == "OK", verdict(page)
        assert name in page.locator("dl.id-facts").inner_text()
