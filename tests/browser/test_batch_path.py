"""One autologous batch from enrolment to bedside administration, done only through the
pages in headless Chromium (issue 9). A keyboard-wedge scanner is simulated by typing
the label payload and Enter into the focused input; the test process only READS the
payloads (labels.services.payload_for_item), as a scanner would read them off the label.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from demo.seed import QC_VALUES, _step_values
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from tests.browser.conftest import log_in, screenshot, submit

# CART-AUTO v2 (issue 15): the bag labels are checked after the fill created the bags.
STEPS = ("receipt", "selection", "activation", "transduction", "expansion", "harvest", "fill",
         "label_check", "cryopreservation")


def payload(app: Any, db: Any, item_id: str) -> str:
    """What the scanner reads off the item's printed label."""
    from labels import services as labels

    with app.app_context(), db.transaction(actor=Actor.system("scanner")) as s:
        return labels.payload_for_item(s, item_id)


def print_and_read_label(page: Any, item_id: str) -> str:
    """Print the item's label from its page (PNG, as a label printer would get it) and read
    the QR code off the printed image, as the scanner will: the payload the test types."""
    import io

    import zxingcpp
    from PIL import Image

    page.goto(f"/items/{item_id}")
    form = page.locator("form.labels-print")
    form.get_by_label("Workstation").fill("WARD-PRINTER-1")
    if form.get_by_label("Reason for the reprint").count():
        form.get_by_label("Reason for the reprint").fill("label damaged")
    with page.expect_download() as download:
        form.get_by_role("button", name="PNG").click()
    image = Image.open(io.BytesIO(Path(download.value.path()).read_bytes()))
    codes = [c.text for c in zxingcpp.read_barcodes(image) if c.text.startswith("GMP1:")]
    assert len(codes) == 1, codes
    return codes[0]


def scan_into(page: Any, selector: str, text: str) -> None:
    """A keyboard-wedge scanner: it types into whatever has focus, then presses Enter."""
    page.locator(selector).focus()
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def verdict(page: Any) -> str:
    """The big verdict (OK/STOP, MATCH/DO NOT INFUSE) and every reason shown under it."""
    try:
        page.locator(".verdict").first.wait_for()
    except Exception as exc:  # the page shows something else: say what, keep a picture
        screenshot(page, "failure-no-verdict")
        raise AssertionError(f"no verdict on {page.url}: {page.locator('main').inner_text()}") \
            from exc
    reasons = page.locator(".id-reasons")
    return page.locator(".verdict").first.inner_text() + (
        " | " + reasons.inner_text() if reasons.count() else "")


def flash_text(page: Any) -> str:
    return " ".join(page.locator("p.flash").all_inner_texts())


def record_step(page: Any, code: str, values: dict[str, Any], password: str,
                verifier: Any | None, scan: str | None = None,
                scans: list[str] | None = None) -> None:
    """Fill and sign a step form; with ``scan``, the bag's label is scanned last into the
    form's scan field (the scanner's Enter submits the form); ``scans`` go one after the
    other into a label check's multi-scan field (each Enter starts the next line)."""
    form = page.locator(f"section#{code} > form.step-form")
    for label in scans or ():
        scan_into(page, f"section#{code} > form.step-form textarea[name=scans]", label)
    for name, value in values.items():
        if name == "bags":
            form.locator("input[name=bags]").fill(str(value))
            continue
        field = form.locator(f"[name=v_{name}]")
        if isinstance(value, bool):
            field.select_option("yes" if value else "no")
        else:
            field.fill(str(value))
    form.get_by_label("Your password").fill(password)
    if verifier is not None:
        form.get_by_label("Second person (verifier) user name").fill(verifier.username)
        form.get_by_label("Verifier password").fill(verifier.password)
    if scan is not None:
        with page.expect_navigation():
            scan_into(page, f"section#{code} > form.step-form input[name=scan]", scan)
    else:
        form.get_by_role("button", name=re.compile("^Sign and record")).click()
    page.wait_for_load_state()
    assert f"step {code} recorded and signed" in flash_text(page), flash_text(page)


@pytest.fixture
def people(make_site: Any, make_user: Any, runner: Any) -> dict[str, Any]:
    # What the installation did before anyone logs in: `gmp-mes init` loads the process
    # definitions (unapproved), sites and people exist.
    result = runner.invoke(args=["init"])
    assert result.exit_code == 0, result.output
    make_site("APH1", "collection")
    make_site("CLEAN1", "manufacturing")
    make_site("HOSP1", "treatment")
    return {
        "clinician": make_user("clara", "clinician", site="HOSP1"),
        "apheresis": make_user("april", "clinician", site="APH1"),
        "operator": make_user("olga", "operator"),
        "operator2": make_user("omar", "operator"),
        "qc": make_user("quinn", "qc"),
        "qa": make_user("quentin", "qa"),
        "qa2": make_user("querida", "qa"),
    }


def test_full_batch_from_enrolment_to_bedside_through_the_pages(
    page: Any, app: Any, db: Any, people: dict[str, Any]
) -> None:
    clinician, operator, operator2 = people["clinician"], people["operator"], people["operator2"]
    qc, qa, qa2 = people["qc"], people["qa"], people["qa2"]

    # QA approves the master batch record (signature with password re-entry).
    log_in(page, qa)
    page.goto("/processes")
    # Version 2 (the label check after the fill): the page shows what changed from v1.
    newest = page.locator("section.card", has=page.get_by_role("button",
                                                               name="Approve CART-AUTO v2"))
    assert "Changes from version 1" in newest.locator(".version-diff").inner_text()
    newest.get_by_label("Password (signature meaning: approved)").fill(qa.password)
    submit(page, newest.get_by_role("button", name="Approve CART-AUTO v2"))
    assert page.locator(".badge.ok", has_text="approved").first.is_visible()

    # The clinician enrols the patient, then records the apheresis collection.
    log_in(page, clinician)
    page.goto("/patients/new")
    page.get_by_label("Given name").fill("Marta")
    page.get_by_label("Family name").fill("Kowalski")
    page.get_by_label("Date of birth").fill("1971-08-19")
    page.get_by_label("Hospital MRN").fill("MRN-77812")
    page.get_by_role("button", name="Enrol and assign COI ID").click()
    page.wait_for_url("**/patients/*")
    coi_id = page.url.rsplit("/", 1)[1]
    assert page.get_by_role("heading", name="KOWALSKI, Marta").is_visible()
    wristband = page.locator("dt:text('Wristband') + dd a").inner_text()
    screenshot(page, "patient")
    # The wristband label is printed at the ward and put on the patient's wrist.
    wristband_label = print_and_read_label(page, wristband)
    page.goto(f"/patients/{coi_id}")
    page.get_by_role("link", name="Record a collection").click()
    collected = (utcnow() - timedelta(hours=2)).astimezone(ZoneInfo("Europe/Paris"))
    page.get_by_label("Collected at (local time)").fill(collected.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Apheresis site").select_option("APH1")
    page.get_by_label("Volume (mL)").fill("215")
    page.get_by_role("button", name="Record collection").click()
    page.wait_for_url("**/items/ITM-*")
    starting = page.url.rsplit("/", 1)[1]
    assert "starting_material" in page.content()
    starting_label = print_and_read_label(page, starting)

    # The apheresis centre ships the bag; the cleanroom receives it (only material received
    # at the manufacturing site starts a batch).
    log_in(page, people["apheresis"])
    custody(page, starting, "ship", "CLEAN1", "")
    log_in(page, operator)
    custody(page, starting, "receive", "CLEAN1", "Goods-in 2-8 °C")

    # The operator scans the bag at the cleanroom scan station: OK.
    page.goto("/scan")
    scan_into(page, "#payload", starting_label)
    assert verdict(page) == "OK", verdict(page)
    assert coi_id[:5] in page.locator(".id-facts").inner_text()
    screenshot(page, "scan-ok")
    # ... and starts the batch from it, scanning the label into the Start batch field.
    page.goto("/batches")
    scan_into(page, "input[name=item_id]", starting_label)
    page.wait_for_url("**/batches/CART-*")
    batch_number = page.url.rsplit("/", 1)[1].split("#")[0]

    # Every step, in order, signed; critical steps verified by a second person. QA
    # Quentin verifies the transduction, so he may not release this batch later.
    labels: list[str] = []
    for code in STEPS:
        values = {k: v for k, v in _step_values(1)[code].items() if k != "labels_verified"}
        if code == "fill":
            values["bags"] = 2
        verifier = {"receipt": operator2, "transduction": qa, "fill": operator2,
                    "label_check": operator2}.get(code)
        record_step(page, code, values, operator.password, verifier,
                    scan=starting_label if code == "receipt" else None,
                    scans=labels if code == "label_check" else None)
        if code == "receipt":  # the identity check by scanning the bag: OK
            assert page.locator("section#receipt .scan-verdict").inner_text() == "OK"
        if code == "fill":  # the bags exist: their labels are printed and read back
            bags = page.locator("section#fill a[href^='/items/ITM-']").all_inner_texts()
            assert len(bags) == 2, bags
            labels = [print_and_read_label(page, b) for b in bags]
            page.goto(f"/batches/{batch_number}")
            shown = page.locator("section#label_check .bags-to-scan").inner_text()
            assert all(b in shown for b in bags), shown
        if code == "label_check":
            assert "labels of 2 bags scanned: OK" in flash_text(page)
            assert page.locator("section#label_check .step-scans").is_visible()
    assert "awaiting release" in page.locator("h1 .badge").inner_text()  # words, not codes
    bag = bags[0]
    screenshot(page, "batch-record")
    bag_label = print_and_read_label(page, bag)

    # QC enters every result of the specification; pass/fail is computed.
    log_in(page, qc)
    page.goto(f"/qc/{batch_number}")
    for test, value in QC_VALUES.items():
        page.locator("select[name=test]").select_option(test)
        entry = page.locator("form.qc-entry")
        if isinstance(value, str):  # qualitative: chosen, never typed (issue 13)
            entry.locator("select[name=outcome]").select_option(value)
        else:
            entry.locator("input[name=value]").fill(str(value))
        entry.get_by_label("Your password").fill(qc.password)
        submit(page, entry.get_by_role("button", name="Record result"))
        assert f"{test}: PASS" in flash_text(page), flash_text(page)
    screenshot(page, "qc-entry")

    # QA: the verifier of a step is refused (segregation of duties), with the reason shown.
    log_in(page, qa)
    page.goto("/qa/release")
    entry = page.locator(f"#b-{batch_number}")
    assert entry.get_by_text("All release conditions are met.").is_visible()
    release = entry.locator("form", has=page.locator("input[value=release]"))
    release.get_by_label("Your password").fill(qa.password)
    submit(page, release.get_by_role("button", name="Release"))
    # Issue 15: the refusal is shown at the batch's entry, in its focused summary.
    refused = page.locator(f"#b-{batch_number} .error-summary").inner_text()
    assert "another QA person must release it" in refused, refused
    screenshot(page, "release-refused-segregation")
    # A second QA person releases it.
    log_in(page, qa2)
    page.goto("/qa/release")
    entry = page.locator(f"#b-{batch_number}")
    release = entry.locator("form", has=page.locator("input[value=release]"))
    release.get_by_label("Your password").fill(qa2.password)
    submit(page, release.get_by_role("button", name="Release"))
    assert f"batch {batch_number} released" in flash_text(page), flash_text(page)

    # The bag goes to the hospital: shipped by the operator, received by the clinician.
    log_in(page, operator)
    custody(page, bag, "ship", "HOSP1", "")
    log_in(page, clinician)
    custody(page, bag, "receive", "HOSP1", "Ward 3 LN2 dry shipper")
    custody(page, bag, "thaw", "HOSP1", "Ward 3, bed 7")

    # Bedside: wristband, then bag, each scanned with Enter: MATCH, then signed administration.
    page.goto("/bedside")
    scan_into(page, "#patient_payload", wristband_label)
    # The first Enter cannot submit (the bag is required): the browser moves to the bag field.
    assert page.evaluate("document.activeElement.id") == "product_payload"
    page.keyboard.type(bag_label)
    page.keyboard.press("Enter")
    assert verdict(page) == "MATCH", verdict(page)
    screenshot(page, "bedside-match")
    page.get_by_label(re.compile("^Your password")).fill(clinician.password)
    submit(page, page.get_by_role("button", name="Sign and record administration"))
    assert verdict(page) == "ADMINISTERED", verdict(page)
    screenshot(page, "bedside-administered")

    # The same bag scanned again at the scan station: STOP, administered.
    page.goto("/scan")
    scan_into(page, "#payload", bag_label)
    assert verdict(page).startswith("STOP | ") and "administered" in verdict(page)
    screenshot(page, "scan-stop")
    page.goto(f"/items/{bag}")
    trail = page.locator("table.data").last.inner_text()
    for action in ("ship", "receive", "thaw", "administer"):
        assert action in trail
    screenshot(page, "item")


def custody(page: Any, item_id: str, action: str, site: str, location: str) -> None:
    """A custody action through the item page's custody form."""
    page.goto(f"/items/{item_id}")
    trail = page.locator("table.data").last
    before = trail.locator("tbody tr", has_text=action).count()
    form = page.locator("form.id-custody")
    form.get_by_label("Action").select_option(action)
    form.get_by_label("Site").select_option(site)
    if location:
        form.get_by_label("Location").fill(location)
    form.get_by_role("button", name="Record custody").click()
    page.wait_for_load_state()
    trail = page.locator("table.data").last
    assert trail.locator("tbody tr", has_text=action).count() == before + 1, trail.inner_text()
