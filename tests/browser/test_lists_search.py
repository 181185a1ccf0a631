"""Lists and search in Chromium (issue 15 "Done when"): /patients searched by name and by
MRN, the header's search box opening an item, and the audit trail going to page 2 and
exporting CSV, its change column readable (not clipped) at 1920 px."""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path
from typing import Any

from gmp_mes import audit
from gmp_mes.audit import Actor
from tests.browser.conftest import ARTIFACTS, log_in, screenshot, submit


def _enrol(app: Any, db: Any, person: Any, site: str, given: str, family: str,
           mrn: str) -> str:
    from identity import services as identity

    with app.app_context(), db.transaction(
            actor=Actor(person.username, person.user_id, person.username)) as s:
        return identity.enrol_patient(s, given_name=given, family_name=family,
                                      date_of_birth=date(1968, 3, 9), mrn=mrn,
                                      treatment_site=site).coi_id


def test_patients_search_by_name_and_mrn(page, app, db, make_site, make_user) -> None:
    make_site("HOSP1", "treatment")
    make_site("HOSP2", "treatment")
    doc = make_user("clara", "clinician", site="HOSP1")
    other = make_user("otto", "clinician", site="HOSP2")
    mine = _enrol(app, db, doc, "HOSP1", "Rosalind", "Franklin", "MRN-4711")
    _enrol(app, db, doc, "HOSP1", "Marie", "Curie", "MRN-1867")
    hidden = _enrol(app, db, other, "HOSP2", "Rosalind", "Elsewhere", "MRN-9999")
    log_in(page, doc)
    page.get_by_role("link", name="Patients").first.click()
    page.wait_for_url("**/patients")
    page.get_by_label("Name, MRN or COI").fill("rosalind")
    submit(page, page.get_by_role("button", name="Search"))
    rows = page.locator("table.patients tbody tr")
    assert rows.count() == 1 and "FRANKLIN, Rosalind" in rows.first.inner_text()
    assert hidden not in page.content() and "Elsewhere" not in page.content()
    screenshot(page, "patients-search-name")
    page.get_by_label("Name, MRN or COI").fill("MRN-1867")
    submit(page, page.get_by_role("button", name="Search"))
    assert rows.count() == 1 and "CURIE, Marie" in rows.first.inner_text()
    screenshot(page, "patients-search-mrn")
    rows.first.get_by_role("link").click()
    page.wait_for_url("**/patients/*")
    assert page.get_by_role("heading", level=1).inner_text() == "CURIE, Marie"
    # The header's search box opens a patient by COI.
    page.get_by_label("Find an item, batch, COI or label").fill(mine.lower())
    page.get_by_label("Find an item, batch, COI or label").press("Enter")
    page.wait_for_url(f"**/patients/{mine}")
    screenshot(page, "header-search-coi")


def test_audit_page_two_and_csv_export(page, app, db, make_user) -> None:
    qa = make_user("quentin", "qa")
    with db.transaction(actor=Actor(qa.username, qa.user_id, "Quentin")) as s:
        for n in range(150):
            audit.record(s, "parameter_changed", "step_record", f"CART-26-0001/S{n:03d}",
                         old={"value": f"{n}.0", "comment": "x" * 300},
                         new={"value": f"{n}.5", "comment": "y " * 200 + "end"})
    page.set_viewport_size({"width": 1920, "height": 1080})
    log_in(page, qa)
    page.get_by_role("link", name="Audit trail").click()
    page.get_by_label("Record type").fill("step_record")
    submit(page, page.get_by_role("button", name="Filter"))
    rows = page.locator("table.audit-trail tbody tr")
    assert rows.count() == 100
    assert "S149" in rows.first.inner_text()
    # Nothing clipped: the change cell stays inside the viewport and shows every field.
    box = rows.first.locator("td.changes").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1920
    assert page.evaluate("document.documentElement.scrollWidth") <= 1920
    cell = rows.first.locator("td.changes").inner_text()
    assert "value" in cell and "149.0" in cell and "end" in cell
    page.screenshot(path=str(ARTIFACTS / "audit-page-1-1920.png"))  # the viewport
    submit(page, page.get_by_role("link", name="Older events →").first)
    assert rows.count() == 50 and "S049" in rows.first.inner_text()
    assert "S000" in rows.last.inner_text()
    assert page.get_by_label("Record type").input_value() == "step_record"
    screenshot(page, "audit-page-2")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV (every matching event)").click()
    download = download_info.value
    text = Path(download.path()).read_text(encoding="utf-8")
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 150 and {r["record_type"] for r in table} == {"step_record"}
    assert download.suggested_filename.startswith("audit-")
