"""Issue 20 in Chromium: the batch page draws the expansion forecast band with its summary,
and the trends page charts the attribute picked in its form; neither breaks the page's
Content-Security-Policy (the charts are SVG images, no inline style). Screenshots go to
tests/artifacts/."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import log_in, screenshot, submit
from tests.browser.test_csp import COLLECT
from tests.test_batches_fixtures import Plant
from tests.test_forecasts import _count, _start, forecast_plant  # noqa: F401 - fixture
from tests.test_qc_fixtures import plant_fixture  # noqa: F401 - fixture

pytestmark = pytest.mark.requirement("SPEC §15")


def test_forecast_band_and_trends_page(browser: Any, live_server: str, fc: Plant) -> None:
    number = _start(fc)
    for day, cells in ((3, 1.5e8), (4, 2.0e8), (5, 2.7e8)):
        _count(fc, number, cells, day)
    context = browser.new_context(base_url=live_server, viewport={"width": 1280, "height": 900})
    context.add_init_script(COLLECT)
    page = context.new_page()
    console: list[str] = []
    # Chromium asks for /favicon.ico, which the app does not serve: not a page problem.
    page.on("console", lambda m: console.append(m.text)
            if m.type == "error" and "favicon" not in (m.location or {}).get("url", "")
            else None)
    log_in(page, fc.operator)

    page.goto(f"/batches/{number}")
    curve = page.locator("img.chart.curve").first
    curve.scroll_into_view_if_needed()
    assert curve.is_visible()
    assert page.evaluate("(img) => img.complete && img.naturalWidth > 0", curve.element_handle())
    assert "Exponential model from 3 counts" in (curve.get_attribute("alt") or "")
    summary = page.locator("p.forecast").inner_text()
    assert "90 % prediction interval" in summary and "probability of reaching" in summary
    screenshot(page, "forecast-batch-page")

    page.goto("/processes/CART-FC/trends")
    page.get_by_label("Attribute").select_option("step:receipt.volume_ml")
    submit(page, page.get_by_role("button", name="Show"))
    assert "attribute=step%3Areceipt.volume_ml" in page.url
    charts = page.locator("section#limits img.chart")
    assert charts.count() == 2 and charts.first.is_visible()
    assert "No control limits" in page.locator("section#limits").inner_text()
    assert page.locator("table.data tr").count() == 2  # the header and our one batch
    screenshot(page, "forecast-trends-page")

    assert page.evaluate("window.__csp") == [] and console == []
    context.close()
