"""Session login, CSRF protection and the page shell (SPEC §7b)."""

from __future__ import annotations

import re

import pytest


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "form without CSRF token"
    return match.group(1)


def page_login(client, person) -> None:
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login",
        data={
            "username": person.username,
            "password": person.password,
            "csrf_token": token,
        },
    )
    assert response.status_code == 302, response.get_data(as_text=True)


def test_pages_redirect_to_login(client) -> None:
    response = client.get("/", headers={"Accept": "text/html"})
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_login_page_and_dashboard(client, make_user) -> None:
    person = make_user("olive", "operator")
    page_login(client, person)
    html = client.get("/").get_data(as_text=True)
    assert "Dashboard" in html and "Olive" in html


@pytest.mark.requirement("21 CFR 11.10(d)")
def test_login_without_csrf_token_is_refused(client, make_user) -> None:
    person = make_user("olive", "operator")
    client.get("/login")
    response = client.post(
        "/login",
        data={"username": "olive", "password": person.password},
        headers={"Accept": "text/html"},
    )
    assert response.status_code == 403
    assert client.get("/", headers={"Accept": "text/html"}).status_code == 302


def test_wrong_password_shows_error(client, make_user) -> None:
    make_user("olive", "operator")
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login",
        data={
            "username": "olive",
            "password": "wrong-wrong",
            "csrf_token": token,
        },
    )
    assert response.status_code == 401
    assert "wrong user name or password" in response.get_data(as_text=True)


def test_logout_needs_csrf_and_ends_the_session(client, make_user) -> None:
    person = make_user("olive", "operator")
    page_login(client, person)
    html = client.get("/").get_data(as_text=True)
    assert client.post("/logout", data={}).status_code == 403
    assert client.post("/logout", data={"csrf_token": csrf_from(html)}).status_code == 302
    assert client.get("/", headers={"Accept": "text/html"}).status_code == 302


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_audit_page_for_qa_only(client, make_user) -> None:
    page_login(client, make_user("quentin", "qa"))
    html = client.get("/audit").get_data(as_text=True)
    assert "Audit trail" in html and "quentin" in html
    # The head to record outside the system, as `gmp-mes audit head` prints it.
    assert re.search(r"Head of the trail now: <code>\d+:[0-9a-f]{64}</code>", html)


def test_audit_page_refused_to_operators(client, make_user) -> None:
    page_login(client, make_user("olive", "operator"))
    assert client.get("/audit", headers={"Accept": "text/html"}).status_code == 403


def test_open_redirect_is_refused(client, make_user) -> None:
    person = make_user("olive", "operator")
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login?next=//evil.example",
        data={
            "username": person.username,
            "password": person.password,
            "csrf_token": token,
        },
    )
    assert response.headers["Location"] == "/"


def test_role_protected_page_redirects_anonymous_users_to_login(client) -> None:
    response = client.get("/audit", headers={"Accept": "text/html"})
    assert response.status_code == 302
    assert "/login?next=/audit" in response.headers["Location"]


def test_navigation_follows_the_work_not_the_registration_order(app) -> None:
    """The bar reads as the work goes (floor, manufacturing, quality, administration),
    whatever order the domains register in (labels and processes register first)."""
    from gmp_mes import registry

    entries = registry.navigation(app)
    assert [e.group for e in entries] == sorted(e.group for e in entries)
    labels = [e.label for e in entries]
    assert labels.index("Scan") < labels.index("Labels") < labels.index("Processes")
    assert labels.index("Release") < labels.index("Users")
