"""Login per role and CSRF in a real browser (issue 9)."""

from __future__ import annotations

import pytest

from tests.browser.conftest import log_in, screenshot


@pytest.mark.parametrize("role", ["operator", "qc", "qa", "clinician", "admin"])
def test_login_per_role_shows_the_dashboard(page, make_user, role) -> None:
    person = make_user(f"{role}user", role)
    log_in(page, person)
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    assert person.username.title() in page.content()
    screenshot(page, f"dashboard-{role}")


@pytest.mark.requirement("21 CFR 11.10(d)")
def test_post_without_csrf_token_is_refused(page, make_user) -> None:
    person = make_user("mallory", "qa")
    log_in(page, person)
    status = page.evaluate(
        """async () => (await fetch('/logout', {method: 'POST'})).status"""
    )
    assert status == 403
    page.goto("/")
    assert page.get_by_role("heading", name="Dashboard").is_visible()


def test_wrong_password_message(page, make_user) -> None:
    make_user("walter", "operator")
    page.goto("/login")
    page.get_by_label("User name").fill("walter")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "wrong user name or password"
    screenshot(page, "login-error")
