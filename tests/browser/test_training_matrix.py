"""Training in Chromium (SPEC §12): QA sees who holds what on the matrix, a qualification
running out within 30 days highlighted, grants one with a password signature (a wrong
password keeps what was typed), and the matrix shows it valid afterwards; at a CART-AUTO
v4 step the check shows "not qualified" before anyone signs, and after a new training
record the step records."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from gmp_mes.clock import clock, utcnow
from tests.browser.conftest import log_in, screenshot, submit
from tests.browser.test_batch_path import flash_text
from tests.test_batches_fixtures import good_values, plant_fixture, sign  # noqa: F401
from tests.test_training_fixtures import CODE, School, school_fixture  # noqa: F401

pytestmark = pytest.mark.requirement("EU GMP Part IV 3")


def test_qa_reads_the_matrix_and_grants_a_qualification(page: Any, school: School) -> None:
    school.grant(school.operator, days=12)  # runs out soon
    school.grant(school.operator2, "cart_manufacturing", days=300)
    log_in(page, school.qa)
    page.goto("/training")
    olga = page.locator('tr[data-user="olga"]')
    assert olga.locator("td").nth(0).get_attribute("data-status") == "expiring_soon"
    background = olga.locator("td").nth(0).evaluate(
        "cell => getComputedStyle(cell).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)"), background
    assert page.locator('tr[data-user="oscar"] td').nth(0).inner_text().strip() == "—"
    screenshot(page, "training-matrix")

    grant = page.locator("section#grant form")
    grant.get_by_label("Person (user name)").fill("oscar")
    grant.locator("input[name=code]").fill(CODE)
    grant.locator("input[name=valid_until]").fill("2999-06-30")
    grant.get_by_label("Your password").fill("not my password")
    submit(page, grant.get_by_role("button", name="Sign and grant"))
    assert "Your signature failed" in page.locator(".error-summary").inner_text()
    grant = page.locator("section#grant form")
    assert grant.locator("input[name=username]").input_value() == "oscar"
    assert grant.locator("input[name=valid_until]").input_value() == "2999-06-30"
    assert grant.get_by_label("Your password").input_value() == ""
    grant.get_by_label("Your password").fill(school.qa.password)
    submit(page, grant.get_by_role("button", name="Sign and grant"))
    assert f"{CODE} granted to oscar" in page.locator(".flash").inner_text()
    assert page.locator('tr[data-user="oscar"] td').nth(0).get_attribute(
        "data-status") == "valid"
    screenshot(page, "training-matrix-granted")


# --- at the step: CART-AUTO v4 (materials, equipment and rooms are stand-ins here) ---------


def _accepted(session: Any, context: Any) -> Any:
    from gmp_mes.registry import StepCheck

    return StepCheck(signed=[])


@pytest.fixture(name="v4")
def v4_fixture(plant: Any) -> Iterator[Any]:
    from gmp_mes import registry
    from training import services

    clock.freeze(utcnow())  # before the first write: the trail never goes back (DEVELOPING)
    plant.approve(4)
    with registry.step_requirements.only({
            "materials": _accepted, "equipment": _accepted, "room_grade": _accepted,
            "qualification": services.check_step_qualification}):
        yield plant


def _grant(plant: Any, person: Any) -> None:
    from training import services

    with plant.tx(plant.qa) as s:
        services.grant_qualification(s, person.username, code="cart_manufacturing",
                                     valid_until=utcnow() + timedelta(days=365),
                                     user_id=plant.qa.user_id,
                                     signature=sign(meaning="approved"))


def test_the_step_check_shows_not_qualified_before_signing_then_records(
        page: Any, v4: Any) -> None:
    plant = v4
    _grant(plant, plant.operator)
    _grant(plant, plant.operator2)
    number = plant.start()
    plant.record(number, "receipt")
    with plant.tx(plant.qa) as s:
        from training import services

        services.revoke_qualification(s, "olga", "cart_manufacturing",
                                      reason="gowning requalification failed",
                                      user_id=plant.qa.user_id)
    clock.advance(timedelta(minutes=1))
    log_in(page, plant.operator)
    page.goto(f"/batches/{number}#selection")
    form = page.locator("section#selection > form.step-form")
    submit(page, form.get_by_role("button", name="Check before signing"))
    shown = page.locator("section#selection .check-result")
    assert "This step would be refused" in shown.inner_text()
    reasons = shown.locator(".check-reasons li").all_inner_texts()
    assert len(reasons) == 1 and "not qualified" in reasons[0], reasons
    assert "gowning requalification failed" in reasons[0], reasons
    screenshot(page, "step-check-not-qualified")

    _grant(plant, plant.operator)  # retrained: a new record
    form = page.locator("section#selection > form.step-form")
    for name, value in good_values(plant.definition(number).step("selection")).items():
        form.locator(f"[name=v_{name}]").fill(str(value))
    form.get_by_label("Your password").fill(plant.operator.password)
    submit(page, form.get_by_role("button", name="Sign and record"))
    assert "step selection recorded and signed" in flash_text(page), flash_text(page)
