"""The outcome-agreement statement on the patient page in headless Chromium (issue 21):
the milestones are evaluated (met, pending), a clinician signs the statement with the
e-signature (meaning approved), and its PDF and JSON links download the signed statement
whose signature binds its content; no CSP violation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import log_in, screenshot, submit
from tests.browser.test_csp import COLLECT
from tests.test_outcomes_fixtures import (  # noqa: F401 - fixtures
    Ward,
    lab_fixture,
    plant_fixture,
    ward_fixture,
)

CODE = "OUTCOME-INSTALMENTS"


@pytest.mark.requirement("SPEC §16")
@pytest.mark.requirement("21 CFR 11.70")
def test_evaluate_sign_and_download_a_statement(page: Any, ward: Ward, login: Any,
                                                tmp_path: Path) -> None:
    coi, batch, _ = ward.infused(login(ward.clinician))
    page.add_init_script(COLLECT)
    log_in(page, ward.clinician)
    page.goto(f"/patients/{coi}")
    agreement = page.locator(f'.agreement[data-agreement="{CODE}"]')
    statuses = agreement.locator("tbody tr").all_inner_texts()
    assert len(statuses) == 3
    assert "Infusion" in statuses[0] and "met" in statuses[0].lower()
    assert all("pending" in s.lower() for s in statuses[1:])
    agreement.get_by_label("Password (e-signature, meaning approved)").fill(
        ward.clinician.password)
    submit(page, agreement.get_by_role("button", name="Sign a statement for the payer"))
    signed = page.locator("#signed-statements li")
    assert signed.count() == 1
    assert CODE in signed.inner_text() and "approved" in signed.inner_text().lower()
    screenshot(page, "agreement-statement-signed")

    with page.expect_download() as pdf:
        signed.get_by_role("link", name="PDF").click()
    pdf_path = tmp_path / "statement.pdf"
    pdf.value.save_as(pdf_path)
    assert pdf_path.read_bytes().startswith(b"%PDF")
    with page.expect_download() as document:
        signed.get_by_role("link", name="JSON").click()
    json_path = tmp_path / "statement.json"
    document.value.save_as(json_path)
    body = json.loads(json_path.read_text())
    assert body["signature_binds"] is True and body["signature"]["meaning"] == "approved"
    assert body["content"]["coi_id"] == coi and body["content"]["batch_number"] == batch
    assert [m["status"] for m in body["content"]["milestones"]] == ["met", "pending",
                                                                    "pending"]
    assert page.evaluate("window.__csp") == []
