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


def _accepted(session: Any, context: Any) -> Any:
    from gmp_mes.registry import StepCheck

    return StepCheck(signed=[])


@pytest.mark.requirement("EU GMP Part IV 9.4")
def test_a_step_in_a_room_another_patient_used_waits_for_a_verified_clearance(
        page: Any, ward: Ward) -> None:
    """CART-AUTO v4's selection step (room grade C) in Chromium: the check shows "line
    clearance required" before anyone signs; after a clearance verified by a second person
    the step is signed and its record names the room. Qualifications, lots and equipment
    are other domains' providers: stand-ins accept them here."""
    from batches import services as batches
    from gmp_mes import registry
    from gmp_mes.registry import StepResources
    from rooms import services
    from tests.browser.test_batch_path import flash_text
    from tests.test_batches_fixtures import good_values, sign

    ward.plant.approve(4)
    ward.room("CR-C1", "C")
    with registry.step_requirements.only({
            "qualification": _accepted, "materials": _accepted, "equipment": _accepted,
            "room_grade": services.check_step_room}):
        first, second = ward.plant.start(), ward.plant.start()
        for number in (first, second):
            ward.plant.record(number, "receipt")
        step = ward.plant.definition(first).step("selection")
        with ward.tx() as s:
            batches.record_step(s, first, "selection", values=good_values(step),
                                user_id=ward.plant.operator.user_id, signature=sign(),
                                resources=StepResources(room="CR-C1"))
        log_in(page, ward.plant.operator)
        page.goto(f"/batches/{second}#selection")
        fields = "section#selection > form.step-form"
        page.locator(f"{fields} input[name=room]").fill("CR-C1")
        submit(page, page.locator(fields).get_by_role("button",
                                                      name="Check before signing"))
        shown = page.locator("section#selection .check-result").inner_text()
        assert "would be refused" in shown and "line clearance required" in shown.lower(), shown
        assert page.locator(f"{fields} input[name=room]").input_value() == "CR-C1"
        screenshot(page, "rooms-step-line-clearance-required")
        ward.verify("CR-C1", ward.clear("CR-C1"))
        page.goto(f"/batches/{second}#selection")
        form = page.locator(fields)
        form.locator("input[name=room]").fill("CR-C1")
        for name, value in good_values(step).items():
            form.locator(f"[name=v_{name}]").fill(str(value))
        form.get_by_label("Your password").fill(ward.plant.operator.password)
        submit(page, form.get_by_role("button", name="Sign and record"))
        assert "step selection recorded and signed" in flash_text(page), flash_text(page)
        assert "room CR-C1 (grade C)" in page.locator("section#selection .step-used").inner_text()
        assert "CR-C1" in page.locator("table.record-rooms").inner_text()
        screenshot(page, "rooms-step-recorded-in-a-cleared-room")
