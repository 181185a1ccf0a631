"""The logistics ``/storage`` page in headless Chromium (SPEC §14): an operator moves a
bag into a storage position from the item page's custody form, and the storage page then
shows that position occupied by the bag (linked to it) and one position fewer free; the
item page shows where it is; no CSP violation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.browser.conftest import log_in, screenshot, submit
from tests.browser.test_csp import COLLECT
from tests.test_identity_fixtures import PLANT, World, world_fixture  # noqa: F401

BOX = f"{PLANT}/LN2-1/R3/B2"


@pytest.mark.requirement("SPEC §14")
def test_storage_shows_the_position_a_move_filled(page: Any, world: World, login: Any,
                                                  make_user: Any) -> None:
    from gmp_mes.clock import utcnow

    admin = login(make_user("ada", "admin", site=PLANT))
    created = admin.post("/api/v1/storage", json={
        "code": BOX, "positions": 3, "condition": {"min_c": -196, "max_c": -150}})
    assert created.status_code == 201, created.get_json()
    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="released",
                     expires_at=utcnow() + timedelta(days=30))

    page.add_init_script(COLLECT)
    log_in(page, world.operator)
    page.goto("/storage")
    unit = page.locator(f'section[id="{BOX}"]')
    assert "0 of 3 positions occupied, 3 free" in unit.inner_text()
    page.goto(f"/items/{bag}")
    form = page.locator("#custody")
    form.get_by_label("Action").select_option("move")
    form.get_by_label("Storage position").fill(f"{BOX}:2")
    submit(page, form.get_by_role("button", name="Record custody"))
    assert f"{BOX}:2" in page.locator("main").inner_text()  # the item shows where it is

    page.goto("/storage")
    unit = page.locator(f'section[id="{BOX}"]')
    assert "1 of 3 positions occupied, 2 free" in unit.inner_text()
    occupied = unit.locator("tr.occupied")
    assert occupied.count() == 1
    assert f"{BOX}:2" in occupied.inner_text() and bag in occupied.inner_text()
    assert unit.locator("tr.free").count() == 2
    screenshot(page, "storage-occupancy")
    submit(page, occupied.get_by_role("link", name=bag))
    assert page.url.endswith(f"/items/{bag}")
    assert page.evaluate("window.__csp") == []
