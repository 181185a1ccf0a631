"""Issue 21 "Done when", in Chromium: a clinician opens the day-28 visit from the patient
page, enters the CRS elements, presses "Check grades" and sees the computed ASTCT grade
before signing (computed by the server: no rule in the page), then signs; no CSP
violation on the way."""

from __future__ import annotations

from datetime import timedelta
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


@pytest.mark.requirement("SPEC §16")
def test_a_day_28_visit_shows_the_computed_grade_before_signing(
    page: Any, ward: Ward, login: Any
) -> None:
    coi, _, bag = ward.infused(login(ward.clinician))
    assessed = (ward.administered_at(bag) + timedelta(minutes=1)).strftime(
        "%Y-%m-%dT%H:%M:%S+00:00")
    page.add_init_script(COLLECT)
    log_in(page, ward.clinician)
    page.goto(f"/patients/{coi}")
    row = page.locator('#follow-up tr[data-visit="P28D"]')
    assert "Day 28" in row.inner_text() and "due" in row.inner_text().lower()
    submit(page, row.get_by_role("link", name="Record"))
    form = page.locator("#follow-up-form")
    form.get_by_label("Assessed at (local time)").fill(assessed)
    form.get_by_label("Response").select_option("CR")
    form.get_by_label("CRS assessed").check()
    form.get_by_label("fever (≥ 38 °C)").check()
    form.get_by_label("Hypotension").select_option("one_vasopressor")
    form.get_by_label("Hypoxia").select_option("low_flow")
    submit(page, form.get_by_role("button", name="Check grades"))
    # Table 4: fever with hypotension needing one vasopressor is grade 3 (hypoxia by low
    # flow, grade 2, is the milder element).
    assert page.locator("#crs-grade").inner_text() == "3"
    assert page.locator("#icans-grade").inner_text() == "not assessed"
    form = page.locator("#follow-up-form")
    assert form.get_by_label("Hypotension").input_value() == "one_vasopressor"  # kept
    screenshot(page, "follow-up-day-28-grade-checked")
    form.get_by_label("Password (e-signature, meaning performed)").fill(ward.clinician.password)
    submit(page, form.get_by_role("button", name="Sign and record"))
    versions = page.locator("#versions").inner_text()
    assert "CR" in versions and "3" in versions
    assert page.locator("#visit-state").inner_text().strip().lower() == "done"
    screenshot(page, "follow-up-day-28-recorded")
    assert page.evaluate("window.__csp") == []
