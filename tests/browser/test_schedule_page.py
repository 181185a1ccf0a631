"""SPEC §13 room bookings in Chromium on the demo data: the clinician opens Schedule from
the navigation, sees the demo's bookings on the Gantt chart (an SVG image) with their
warnings, books CR-B1 for a patient with an infusion planned four days after the release
and before the 7-day sterility result, and lands on the booking with the
``qc_result_after_infusion`` warning; the schedule and the patient page then show it.
Then the demo's temperature-logged shipment: its page draws the log's chart. No CSP
violation. Screenshots go to tests/artifacts/ (an excursion and a gap on the chart:
tests/browser/test_shipment_chart.py)."""

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


def test_book_a_room_and_see_the_qc_result_warning(browser: Any, live_server: str,
                                                   demo: Summary) -> None:
    context = browser.new_context(base_url=live_server, viewport={"width": 1280, "height": 900})
    context.add_init_script(COLLECT)
    page = context.new_page()
    console = console_errors(page)
    sign_in(page, "clinician")

    page.get_by_role("link", name="Schedule").first.click()
    page.wait_for_url("**/schedule")
    chart = page.locator("#gantt img.chart")
    assert page.evaluate("(img) => img.complete && img.naturalWidth > 0",
                         chart.element_handle())
    alt = chart.get_attribute("alt") or ""
    assert "CR-B1" in alt and "hold_time_exceeded" in alt  # the demo's booking warns
    assert page.locator("#bookings tbody tr[data-booking]").count() == 4
    screenshot(page, "schedule-gantt")

    coi = next(c for c, s in demo.patients.items() if s == "administered")
    form = page.locator("form#book")
    form.get_by_label("Patient COI ID").fill(coi)
    form.get_by_label("Room").select_option("CR-B1")
    # Far after every demo window: apheresis 1 June, fill 13 June, release 16 June,
    # sterility 20 June; the infusion is planned for 18 June.
    form.get_by_label("Apheresis (local time)").fill("2027-06-01T09:00")
    form.get_by_label("Planned infusion (local time)").fill("2027-06-18T09:00")
    submit(page, form.get_by_role("button", name="Book"))
    assert "/bookings/" in page.url
    warning = page.locator("#warnings li[data-warning='qc_result_after_infusion']")
    assert warning.count() == 1
    assert "sterility" in warning.inner_text() and "conditional release" in warning.inner_text()
    assert page.locator("#warnings li").count() == 1
    screenshot(page, "booking-qc-warning")

    page.goto("/schedule?from=2027-05-31&weeks=4")
    row = page.locator("#bookings tbody tr[data-booking]")
    assert row.count() == 1
    assert row.locator("[data-warning='qc_result_after_infusion']").count() == 1
    page.goto(f"/patients/{coi}")
    assert page.locator("#patient-bookings [data-warning='qc_result_after_infusion']"
                        ).count() == 1

    page.goto("/shipments")
    page.get_by_role("link", name="SHP-000001").click()
    page.wait_for_url("**/shipments/SHP-000001")
    chart = page.locator("img.temperature-chart")
    assert chart.evaluate("img => img.complete && img.naturalWidth > 0")
    assert "360" in page.locator("body").inner_text()  # readings in the log's summary
    screenshot(page, "demo-shipment-temperature-chart")
    assert page.evaluate("window.__csp") == [] and console == []
    context.close()
