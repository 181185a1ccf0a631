"""SPEC §13 in Chromium on the demo data: the clinician reaches the vein-to-vein report
from /reports, sees both charts (SVG images) and the per-process table, asks a period
with `from` after `to` and gets the refusal at the field; the administered patient's page
shows the timeline. No CSP violation. Screenshots go to tests/artifacts/."""

from __future__ import annotations

from typing import Any

import pytest

from demo.seed import Summary
from tests.browser.conftest import console_errors, screenshot, submit
from tests.browser.test_csp import COLLECT
from tests.browser.test_demo_pages import (  # noqa: F401 (fixtures)
    database_url,
    sign_in,
)
from tests.browser.test_demo_pages import demo as demo

pytestmark = pytest.mark.requirement("SPEC §13")


def test_vein_to_vein_report_and_patient_timeline(browser: Any, live_server: str,
                                                  demo: Summary) -> None:
    context = browser.new_context(base_url=live_server, viewport={"width": 1280, "height": 900})
    context.add_init_script(COLLECT)
    page = context.new_page()
    console = console_errors(page)
    sign_in(page, "clinician")

    page.goto("/reports")
    page.get_by_role("link", name="Vein-to-vein time and manufacturing failure").click()
    page.wait_for_url("**/reports/vein-to-vein")
    charts = page.locator("img.chart")
    assert charts.count() == 2
    for index in range(2):
        assert page.evaluate("(img) => img.complete && img.naturalWidth > 0",
                             charts.nth(index).element_handle())
    assert "Vein-to-vein time in days" in (charts.first.get_attribute("alt") or "")
    rows = page.locator("#vein-to-vein-summary tbody tr[data-process]")
    assert rows.count() >= 2  # the process over all versions and at least one version
    screenshot(page, "vein-to-vein-report")

    page.get_by_label("From (UTC day)").fill("2026-03-02")
    page.get_by_label("To (UTC day, inclusive)").fill("2026-03-01")
    submit(page, page.get_by_role("button", name="Show"))
    assert "must not be after to" in page.locator(".error-summary").inner_text()
    # The refused period answers 422 on purpose; Chromium logs that status as an error.
    assert console == ["Failed to load resource: the server responded with a status of "
                       "422 (UNPROCESSABLE ENTITY)"]
    console.clear()

    coi = next(c for c, s in demo.patients.items() if s == "administered")
    page.goto(f"/patients/{coi}")
    timeline = page.locator("table#timeline")
    assert timeline.is_visible()
    assert "not yet" not in timeline.locator("tr[data-milestone='administered']").inner_text()
    assert "not yet administered" not in page.locator("#vein-to-vein").inner_text()
    screenshot(page, "patient-timeline")

    assert page.evaluate("window.__csp") == [] and console == []
    context.close()
