"""A label preview and then a first print that needs no reason (issue 15 "Done when"),
in Chromium: the preview opens in a tab, marked, and records nothing; the first real
print is the original (no reprint reason asked); the PDF opens inline."""

from __future__ import annotations

import io
from datetime import date, timedelta
from typing import Any

import zxingcpp
from PIL import Image

from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from tests.browser.conftest import log_in, screenshot


def _bag(app: Any, db: Any, make_site: Any) -> str:
    from identity import services as identity

    make_site("HOSP1", "treatment")
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        coi = identity.enrol_patient(s, given_name="Jeanne", family_name="Dupont",
                                     date_of_birth=date(1971, 5, 17), mrn="MRN-1",
                                     treatment_site="HOSP1").coi_id
        return identity.create_item(s, kind="final_product", coi_id=coi, site_code="CLEAN1",
                                    status="quarantine", batch_number="B-1",
                                    description="CAR-T bag",
                                    expires_at=utcnow() + timedelta(days=200)).item_id


def test_preview_then_first_print_needs_no_reason(page, app, db, make_site, make_user) -> None:
    operator = make_user("olga", "operator")
    bag = _bag(app, db, make_site)
    log_in(page, operator)
    page.goto(f"/items/{bag}")
    form = page.locator("form.labels-print")
    with page.context.expect_page() as tab_info:
        form.get_by_role("link", name="Preview (PNG)").click()
    tab = tab_info.value
    tab.wait_for_load_state()
    shown = tab.request.get(tab.url)
    assert shown.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(shown.body()))
    (code,) = [c.text for c in zxingcpp.read_barcodes(image)]
    assert code.startswith("PREVIEW:")  # never a signed payload
    screenshot(tab, "label-preview")
    tab.close()
    page.reload()
    assert "No label printed yet." in page.content()
    assert form.get_by_label("Reason for the reprint").count() == 0  # still the original
    assert form.get_by_role("button", name="Print PDF").is_visible()
    screenshot(page, "label-before-first-print")
    with page.context.expect_event(
            "response", lambda r: r.url.endswith("/labels/print")) as answer:
        form.get_by_role("button", name="Print PDF").click()
    printed = answer.value
    assert printed.status == 200 and printed.headers["content-type"] == "application/pdf"
    assert printed.headers["content-disposition"].startswith("inline")  # the print dialog
    for other in page.context.pages[1:]:
        other.close()
    page.reload()
    history = page.locator("table", has_text="Reprint").first
    rows = history.locator("tbody tr")
    assert rows.count() == 1 and "pdf" in rows.first.inner_text()
    assert rows.first.locator("td").nth(4).inner_text() == "no"  # not a reprint
    assert form.get_by_label("Reason for the reprint").count() == 1  # the next one is
    screenshot(page, "label-after-first-print")
