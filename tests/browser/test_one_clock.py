"""One clock (issue 15 "Done when"): the same event, the starting material's expiry,
shows one local time with the zone's name on the batch page, in the batch-record PDF
(rendered to PNG, its text read) and on the label; the PDF and label add UTC after it."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

import pypdfium2 as pdfium

from gmp_mes.audit import Actor
from tests.browser.conftest import ARTIFACTS, log_in, screenshot
from tests.browser.test_batch_path import payload, scan_into
from tests.browser.test_receipt_scan import _received_bag, people  # noqa: F401


def _pdf_text_and_png(data: bytes, name: str) -> str:
    document = pdfium.PdfDocument(data)
    texts = []
    for index, page in enumerate(document):
        texts.append(page.get_textpage().get_text_range())
        if index == 0:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.render(scale=2).to_pil().save(ARTIFACTS / f"{name}.png")
    return "\n".join(texts)


def test_expiry_is_one_local_time_on_page_pdf_and_label(
        page: Any, app: Any, db: Any, people: dict[str, Any]) -> None:  # noqa: F811
    from identity import services as identity

    bag = _received_bag(app, db, people, 1)
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        expires = identity.get_item(s, bag).expires_at
    local = expires.astimezone(ZoneInfo("Europe/Paris"))
    minute = local.strftime("%Y-%m-%d %H:%M")
    zone = local.strftime("%Z")  # CET or CEST
    utc = expires.strftime("%H:%M")

    log_in(page, people["operator"])
    page.goto("/batches")
    scan_into(page, "input[name=item_id]", payload(app, db, bag))
    page.wait_for_url("**/batches/CART-*")
    number = page.url.rsplit("/", 1)[1].split("#")[0]
    link = page.locator(f"a[href='/items/{bag}']")
    row = page.locator("h2:text('Genealogy') + section tr", has=link).first
    shown = row.inner_text()
    assert re.search(rf"{minute}:\d\d {zone}", shown), shown  # the page: local + zone
    assert "UTC" not in shown
    screenshot(page, "one-clock-batch-page")

    pdf = page.request.get(f"/batches/{number}/record.pdf")
    text = _pdf_text_and_png(pdf.body(), "one-clock-batch-record-pdf")
    assert re.search(rf"{minute}:\d\d {zone} \({utc}:\d\d UTC\)", text), text[:2000]

    preview = page.request.get(f"/items/{bag}/labels/preview?format=pdf")
    label = _pdf_text_and_png(preview.body(), "one-clock-label")
    assert f"EXP: {minute} {zone}" in label and f"{utc} UTC" in label, label
    assert label.index(f"{minute} {zone}") < label.index("UTC")  # local first
