"""Issue 18 "Done when", in Chromium: the EM page of a room renders its trend chart (values
over time with the alert and action limit lines) with no CSP violation; a result entered
on the room page (post/redirect/get) lands on that page, an excursion flagged.
Screenshots go to tests/artifacts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gmp_mes.clock import clock
from tests.browser.conftest import log_in, screenshot, submit
from tests.browser.test_csp import COLLECT
from tests.test_batches_fixtures import plant_fixture  # noqa: F401
from tests.test_rooms_fixtures import Ward, ward_fixture  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.requirement("EU GMP Annex 1 §9")]


def test_the_em_trend_page_and_an_excursion_entered_on_the_room_page(
        page: Any, ward: Ward) -> None:
    from rooms import services

    ward.room("CR-B1", "B")
    number = ward.plant.start()
    with ward.tx(ward.admin) as s:
        services.set_alert_limit(s, site_code="CLEAN1", grade="B", sample_type="settle_plate",
                                 alert_limit=3, user_id=ward.admin.user_id)
    start = clock.now()
    for day, value in enumerate((0, 1, 0, 2, 3, 1)):
        ward.em("CR-B1", "settle_plate", value, sampled_at=start + timedelta(hours=day))
        clock.advance(timedelta(hours=1))
    ward.enter(number, "CR-B1")
    page.context.add_init_script(COLLECT)
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text)
            if "Content Security Policy" in m.text or "Content-Security-Policy" in m.text
            else None)
    log_in(page, ward.qc)
    page.goto("/rooms/CR-B1")
    form = page.locator("section#em form")
    form.get_by_label("Sample type").select_option("settle_plate")
    form.get_by_label("Colonies counted (cfu)").fill("7")
    form.get_by_label("Sampled at (site time)").fill(
        (clock.now() - timedelta(minutes=30)).astimezone(
            ZoneInfo("Europe/Paris")).strftime("%Y-%m-%dT%H:%M"))
    form.get_by_label("Location in the room (optional)").fill("BSC-01 left")
    form.get_by_label("Your password").fill(ward.qc.password)
    submit(page, form.get_by_role("button", name="Sign and record"))
    assert page.url.endswith("/rooms/CR-B1/em/settle_plate")
    assert "FAILED the action limit 5" in page.content()
    chart = page.locator("#trend img.chart")
    assert chart.count() == 1
    assert page.evaluate("document.querySelector('#trend img.chart').naturalWidth") > 0
    assert "action limit 5" in (chart.get_attribute("alt") or "")
    assert "alert limit 3" in (chart.get_attribute("alt") or "")
    assert page.locator("table.em-results tr.stop").count() == 1
    screenshot(page, "rooms-em-trend")
    page.goto("/rooms/CR-B1")
    assert "line clearance" in page.content().lower()
    screenshot(page, "rooms-room-page")
    assert page.evaluate("window.__csp") == [] and console == []
    # The deviation the excursion opened holds the batch (the batches domain shows it).
    assert [d[1] for d in ward.deviations(number)] == ["critical"]
