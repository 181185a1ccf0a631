"""Issue 18 "Done when", in Chromium: at a CART-AUTO v4 step, an operator without the
step's training, in a room whose last step served another patient, presses the check and
sees both "not qualified" and "line clearance required" before anyone signs; after QA's
training record and a line clearance performed by one operator and verified by another,
the same step is signed and recorded in that room.

The qualification and room checks are the real providers (training, rooms); lots and
equipment are another issue's and accept here."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from gmp_mes.clock import clock, utcnow
from gmp_mes.registry import StepCheck
from tests.browser.conftest import log_in, screenshot, submit
from tests.browser.test_batch_path import flash_text
from tests.conftest import PASSWORD, Person
from tests.test_batches_fixtures import PLANT, Plant, good_values, plant_fixture, sign  # noqa: F401

pytestmark = [pytest.mark.requirement("EU GMP Part IV 3"),
              pytest.mark.requirement("EU GMP Part IV 9.4")]

QUALIFICATION, ROOM = "cart_manufacturing", "CR-C1"


def _accepted(session: Any, context: Any) -> StepCheck:
    return StepCheck(signed=[])


@pytest.fixture(name="suite")
def suite_fixture(plant: Plant, make_user: Any) -> Iterator[dict[str, Any]]:
    """v4 approved; a grade C room; Olga and Omar trained; batch A's selection done in
    the room; batch B (another patient) received and waiting for its selection, which
    Otto, not yet trained, is about to do."""
    from gmp_mes import registry
    from rooms import services as rooms
    from training import services as training

    clock.freeze(utcnow())  # before the first write: the trail never goes back
    admin = make_user("adam", "admin")
    oscar = make_user("otto", "operator", site=PLANT)
    plant.approve(4)
    with registry.step_requirements.only({
            "materials": _accepted, "equipment": _accepted,
            "qualification": training.check_step_qualification,
            "room_grade": rooms.check_step_room}):
        with plant.tx(admin) as s:
            rooms.create_room(s, code=ROOM, site_code=PLANT, grade="C",
                              name="Processing suite 1", user_id=admin.user_id)
        for person in (plant.operator, plant.operator2):
            _train(plant, person)
        first = plant.start()
        plant.record(first, "receipt")
        _record_in_room(plant, first, "selection")
        second = plant.start()
        plant.record(second, "receipt")
        clock.advance(timedelta(minutes=5))
        yield {"first": first, "second": second, "oscar": oscar}


def _train(plant: Plant, person: Person) -> None:
    from training import services

    with plant.tx(plant.qa) as s:
        services.grant_qualification(s, person.username, code=QUALIFICATION,
                                     valid_until=utcnow() + timedelta(days=365),
                                     user_id=plant.qa.user_id,
                                     signature=sign(meaning="approved"))


def _record_in_room(plant: Plant, number: str, step_code: str) -> None:
    from batches import services
    from gmp_mes.registry import StepResources

    step = plant.definition(number).step(step_code)
    with plant.tx(plant.operator) as s:
        services.record_step(s, number, step_code, values=good_values(step),
                             user_id=plant.operator.user_id, signature=sign(),
                             resources=StepResources(room=ROOM))


def _check(page: Any, number: str) -> Any:
    form = page.locator("section#selection > form.step-form")
    form.locator("input[name=room]").fill(ROOM)
    submit(page, form.locator("button[name=check]"))
    return page.locator("section#selection .check-result")


def test_a_refused_step_shows_not_qualified_and_line_clearance_then_records(
        page: Any, plant: Plant, suite: dict[str, Any]) -> None:
    from rooms import services as rooms

    number, oscar = suite["second"], suite["oscar"]
    log_in(page, oscar)
    page.goto(f"/batches/{number}#selection")
    shown = _check(page, number)
    assert "This step would be refused" in shown.inner_text()
    reasons = shown.locator(".check-reasons li").all_inner_texts()
    words = " | ".join(reasons).lower()
    assert len(reasons) == 2, reasons
    assert "not qualified" in words and "otto" in words, reasons
    assert "line clearance required" in words and ROOM.lower() in words, reasons
    screenshot(page, "step-check-not-qualified-and-line-clearance")

    # QA's training record for Otto; a clearance by one person does not count yet.
    _train(plant, oscar)
    with plant.tx(plant.operator) as s:
        clearance = rooms.perform_clearance(s, ROOM, user_id=plant.operator.user_id,
                                            signature=sign())
        clearance_id = clearance.id
    clock.advance(timedelta(minutes=1))
    shown = _check(page, number)
    reasons = shown.locator(".check-reasons li").all_inner_texts()
    assert len(reasons) == 1 and "line clearance required" in reasons[0].lower(), reasons

    # The second person verifies the clearance: the step goes through and is recorded.
    with plant.tx(plant.operator2) as s:
        rooms.verify_clearance(s, ROOM, clearance_id, user_id=plant.operator2.user_id,
                               signature=sign(meaning="verified"))
    clock.advance(timedelta(minutes=1))
    shown = _check(page, number)
    assert "This step would be refused" not in shown.inner_text(), shown.inner_text()
    form = page.locator("section#selection > form.step-form")
    for name, value in good_values(plant.definition(number).step("selection")).items():
        form.locator(f"[name=v_{name}]").fill(str(value))
    form.locator("input[name=room]").fill(ROOM)
    form.get_by_label("Your password").fill(PASSWORD)
    submit(page, form.get_by_role("button", name="Sign and record"))
    assert "step selection recorded and signed" in flash_text(page), flash_text(page)
    assert ROOM in page.locator("section#selection").inner_text()
    screenshot(page, "step-recorded-after-training-and-clearance")
