"""The outcome report page in headless Chromium (issue 21, SPEC §16 ``/reports/outcomes``):
the plot of a chosen attribute against the best response loads (a CSP-safe data URI drawn
by gmp_mes.charts), the table shows each batch by COI with its forecast before harvest,
and the CSV link downloads the same rows; no CSP violation."""

from __future__ import annotations

import csv
import io
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import log_in, screenshot, submit
from tests.browser.test_csp import COLLECT
from tests.test_outcomes_fixtures import (  # noqa: F401 - fixtures
    Ward,
    lab_fixture,
    plant_fixture,
    record_body,
    ward_fixture,
)
from tests.test_outcomes_report import forecast_ward_fixture  # noqa: F401 - fixture


def _record(api: Any, coi: str, bag: str, ward: Ward, response: str) -> None:
    at = (ward.administered_at(bag) + timedelta(minutes=1)).astimezone(UTC).isoformat()
    answer = api.post(f"/api/v1/patients/{coi}/follow-up",
                      json=record_body("P28D", assessed_at=at, response=response))
    assert answer.status_code == 201, answer.get_json()


@pytest.mark.requirement("SPEC §16")
def test_the_report_plots_and_downloads_its_csv(page: Any, forecast_ward: Ward,
                                                login: Any, tmp_path: Path) -> None:
    ward = forecast_ward
    api = login(ward.clinician)
    a = ward.infused(api, expansion=[(1e7, 90.0, 2.0), (2e7, 91.0, 3.0), (4e7, 92.0, 4.0)],
                     qc={"viability": {"value": 91.0}})
    b = ward.infused(api, expansion=[(2e7, 85.0, 3.0), (3e7, 81.0, 5.0)],
                     qc={"viability": {"value": 82.0}})
    _record(api, a[0], a[2], ward, "CR")
    _record(api, b[0], b[2], ward, "PD")

    page.add_init_script(COLLECT)
    log_in(page, ward.lab.qa)
    page.goto("/reports")
    submit(page, page.get_by_role("link", name="Outcomes after infusion"))
    page.get_by_label("Quality attribute to plot").select_option("forecast:p_target")
    submit(page, page.get_by_role("button", name="Show"))
    chart = page.locator("img.chart")
    assert chart.count() == 1
    assert chart.evaluate("img => img.complete && img.naturalWidth > 0")
    assert "forecast:p_target" in (chart.get_attribute("alt") or "")
    rows = page.locator("#outcomes tbody tr")
    assert rows.count() == 2
    text = page.locator("#outcomes").inner_text()
    assert a[0] in text and b[0] in text
    assert "exponential from 3 counts to day 4, doubling 24 h" in text
    assert "none: too few counts" in text
    screenshot(page, "outcome-report")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    saved = tmp_path / "outcomes.csv"
    download.value.save_as(saved)
    assert download.value.suggested_filename == "outcomes-CART-AUTO.csv"
    by_batch = {r["batch_number"]: r for r in csv.DictReader(io.StringIO(saved.read_text()))}
    assert by_batch[a[1]]["best_response"] == "CR" and by_batch[a[1]]["qc_viability"] == "91.0"
    assert by_batch[a[1]]["forecast_model"] == "exponential"
    assert by_batch[b[1]]["response_P28D"] == "PD"
    assert page.evaluate("window.__csp") == []
