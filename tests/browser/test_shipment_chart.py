"""The shipment page's temperature chart in headless Chromium (issue 19, SPEC §7b
``/shipments/<id>``): the chart image loads (a CSP-safe data URI drawn by
gmp_mes.charts), the excursion and the gap are listed, the page breaks no CSP rule;
a screenshot goes to tests/artifacts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import log_in, screenshot
from tests.browser.test_csp import COLLECT
from tests.test_identity_fixtures import World, world_fixture  # noqa: F401
from tests.test_logistics_shipments import Route, log_csv


@pytest.mark.requirement("EU GDP 9.2")
def test_shipment_page_shows_the_temperature_chart(browser: Any, live_server: str,
                                                   world: World, login: Any) -> None:
    route = Route(world, login)
    shipment = route.shipped(logger_id="LOG-1", shipper_id="DEWAR-2")
    temps = [-180.0 + (i % 5) * 0.8 for i in range(600)]
    temps[200:230] = [-140.0 + (i % 3) for i in range(30)]  # a 30-minute excursion
    del temps[400:420]  # 20 lost readings: a gap
    text = log_csv(temps)
    # log_csv numbers readings by minute; a gap needs missing times, not missing values.
    lines = text.splitlines()
    text = "\n".join(lines[:401] + lines[421:]) + "\n"
    assert route.upload(shipment, text).status_code == 201
    route.receive(shipment)

    context = browser.new_context(base_url=live_server, viewport={"width": 1280, "height": 900})
    context.add_init_script(COLLECT)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    try:
        log_in(page, world.qa)
        response = page.goto(f"/shipments/{shipment}")
        assert response is not None and response.status == 200
        page.wait_for_load_state("load")
        chart = page.locator("img.temperature-chart")
        assert chart.count() == 1
        assert chart.evaluate("img => img.complete && img.naturalWidth > 0")
        assert "excursion" in (chart.get_attribute("alt") or "")
        assert page.locator("tr.excursion").count() == 1
        assert page.locator("tr.gap").count() == 1
        assert page.get_by_text("ON HOLD").count() >= 1
        assert page.locator("#disposition").count() == 1  # QA decides here
        screenshot(page, "shipment_temperature_chart")
        violations = page.evaluate("window.__csp")
        assert violations == [], violations
        assert not [m for m in console if "Content Security Policy" in m], console
    finally:
        context.close()
