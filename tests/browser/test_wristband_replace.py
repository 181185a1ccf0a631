"""A damaged wristband label replaced at the bedside (issue 13), through the pages in
headless Chromium: the damaged copy is voided and its replacement printed in one step,
the new label gives MATCH with the bag, the old one DO NOT INFUSE."""

from __future__ import annotations

import io
from datetime import date, timedelta
from typing import Any

import pypdfium2 as pdfium
import pytest
import zxingcpp
from PIL import Image

from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from tests.browser.conftest import log_in, screenshot
from tests.browser.test_batch_path import print_and_read_label, scan_into, verdict


def read_pdf_codes(data: bytes) -> list[str]:
    document = pdfium.PdfDocument(data)
    try:
        images = []
        for index in range(len(document)):
            page = document[index]
            images.append(page.render(scale=200 / 72).to_pil())
            page.close()
    finally:
        document.close()
    return [c.text for image in images for c in zxingcpp.read_barcodes(image)]


def bag_label(app: Any, db: Any, bag: str, operator: Any) -> str:
    """The bag's printed label, read off its PNG as a scanner would."""
    from labels import services as labels

    with app.app_context(), db.transaction(actor=operator.actor) as s:
        printed = labels.print_label(
            s, bag, labels.PrintRequest(format="png"), user_id=operator.user_id
        )
    (code,) = [c.text for c in zxingcpp.read_barcodes(Image.open(io.BytesIO(printed.content)))]
    return code


@pytest.mark.requirement("SPEC §6")
def test_damaged_wristband_replaced_at_the_bedside_gives_match(
    page, app, db, make_site, make_user
) -> None:
    from identity import services as identity

    make_site("HOSP1", "treatment")
    clinician = make_user("clara", "clinician", site="HOSP1")
    ward_operator = make_user("walt", "operator", site="HOSP1")
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        patient = identity.enrol_patient(
            s, given_name="Ada", family_name="Lovelace", date_of_birth=date(1970, 5, 17),
            mrn="MRN-77", treatment_site="HOSP1",
        )
        coi_id, wristband = patient.coi_id, patient.wristband_item_id
        bag = identity.create_item(
            s, kind="final_product", coi_id=coi_id, site_code="HOSP1", status="released",
            expires_at=utcnow() + timedelta(days=30), description="CAR-T bag",
        ).item_id
    product = bag_label(app, db, bag, ward_operator)

    log_in(page, clinician)
    damaged = print_and_read_label(page, wristband)  # the wristband as first printed
    assert len(damaged.split(":")) == 7 and damaged.split(":")[5] == "1"

    # The wristband got wet: the scanner reads garbage. DO NOT INFUSE.
    page.goto("/bedside")
    scan_into(page, "#patient_payload", damaged[:40] + "#%" + damaged[45:])
    page.keyboard.type(product)
    page.keyboard.press("Enter")
    assert verdict(page).startswith("DO NOT INFUSE"), verdict(page)

    # Replace it from the bedside page: find the wristband by the COI printed on it.
    page.get_by_label("Wristband damaged or unreadable? COI ID printed on it").fill(coi_id)
    page.get_by_role("button", name="Replace wristband label").click()
    page.wait_for_url("**/bedside/wristband-label*")
    form = page.locator("form.labels-replace")
    form.get_by_label("Reason").fill("wristband wet, QR unreadable")
    form.get_by_label("Format").select_option("pdf")
    screenshot(page, "wristband-replace")
    # The replacement PDF opens in the browser for its print dialog (issue 15): the
    # test reads it on its way to the browser's PDF viewer.
    answers: list[tuple[dict[str, str], bytes]] = []

    def grab(route: Any) -> None:
        response = route.fetch()
        answers.append((response.headers, response.body()))
        route.fulfill(response=response)

    page.route("**/replace", grab)
    form.get_by_role("button", name="Replace label").click()
    page.wait_for_function("() => true")
    for _ in range(50):
        if answers:
            break
        page.wait_for_timeout(100)
    headers, body = answers[0]
    assert headers["content-disposition"].startswith("inline")
    codes = read_pdf_codes(body)
    assert len(codes) == 1, codes
    replacement = codes[0]
    assert replacement.split(":")[5] == "2" and replacement != damaged

    # The new wristband label gives MATCH with the bag.
    page.goto("/bedside")
    scan_into(page, "#patient_payload", replacement)
    assert page.evaluate("document.activeElement.id") == "product_payload"
    page.keyboard.type(product)
    page.keyboard.press("Enter")
    assert verdict(page) == "MATCH", verdict(page)
    screenshot(page, "bedside-match-after-replace")

    # The old copy, should it still be read, is voided: DO NOT INFUSE.
    page.goto("/bedside")
    scan_into(page, "#patient_payload", damaged)
    page.keyboard.type(product)
    page.keyboard.press("Enter")
    text = verdict(page)
    assert text.startswith("DO NOT INFUSE") and "voided" in text, text
