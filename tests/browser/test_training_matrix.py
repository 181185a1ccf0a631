"""The training matrix in Chromium (SPEC §12): QA sees who holds what, a qualification
running out within 30 days highlighted, grants one with a password signature (a wrong
password keeps what was typed), and the matrix shows it valid afterwards."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import log_in, screenshot, submit
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
