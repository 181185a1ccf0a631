"""Admin pages (issue 9): users and sites, admin role only, CSRF on every form, field
errors next to the field, and the account rules of gmp_mes.accounts behind them."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmp_mes import accounts
from gmp_mes.audit import Actor
from tests.conftest import PASSWORD
from tests.helpers import assert_problem, audit_events
from tests.test_pages_core import csrf_from, page_login

HTML = {"Accept": "text/html"}


@pytest.fixture
def admin_client(client: Any, make_user: Any) -> Any:
    page_login(client, make_user("ada", "admin"))
    return client


def _form(client: Any, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)
    return csrf_from(response.get_data(as_text=True))


def _error_after(html: str, field: str) -> str:
    """The field error shown right after the field's input (the page's structure)."""
    match = re.search(rf'id="{field}-error">([^<]+)<', html)
    assert match, f"no error next to {field}"
    return match.group(1)


def test_admin_creates_a_user_with_several_roles(admin_client: Any, db: Any, app: Any) -> None:
    token = _form(admin_client, "/admin/users/new")
    response = admin_client.post("/admin/users/new", data={
        "csrf_token": token, "username": "Nina.Nurse", "full_name": "Nina Nurse",
        "email": "nina@example.org", "site": "CLEAN1", "roles": ["clinician", "operator"],
        "password": PASSWORD, "password_confirm": PASSWORD,
    })
    assert response.status_code == 302
    listing = admin_client.get("/admin/users").get_data(as_text=True)
    assert "nina.nurse" in listing and "clinician, operator" in listing
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        user = accounts.get_user(s, "nina.nurse")
        assert accounts.check_password(user.password_hash, PASSWORD)
        assert user.roles == {"clinician", "operator"} and user.full_name == "Nina Nurse"
        # 21 CFR 11.300(b): the password the administrator chose is one-time.
        assert user.must_change_password
        with pytest.raises(accounts.PasswordChangeRequired):
            accounts.authenticate(s, "nina.nurse", PASSWORD)
    # The creation is attributed to the administrator in the audit trail.
    events = audit_events(db, entity_type="user", entity_id="nina.nurse")
    assert events and events[0]["username"] == "ada"


def test_user_form_shows_every_field_error_next_to_its_field(admin_client: Any) -> None:
    token = _form(admin_client, "/admin/users/new")
    response = admin_client.post("/admin/users/new", data={
        "csrf_token": token, "username": "bad name!", "full_name": "X", "site": "CLEAN1",
        "email": "not-an-address", "password": "short", "password_confirm": "short",
    }, headers=HTML)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "letters, digits" in _error_after(html, "username")
    assert "at least 12" in _error_after(html, "password")
    assert "e-mail" in _error_after(html, "email")
    assert "role" in _error_after(html, "roles")
    # What was typed is kept (except the password).
    assert 'value="bad name!"' in html and 'value="short"' not in html

    mismatch = admin_client.post("/admin/users/new", data={
        "csrf_token": token, "username": "zed", "full_name": "Zed", "site": "CLEAN1",
        "roles": ["qa"], "password": PASSWORD, "password_confirm": PASSWORD + "x",
    })
    assert mismatch.status_code == 422
    assert "differ" in _error_after(mismatch.get_data(as_text=True), "password_confirm")


def test_a_taken_user_name_is_refused_at_the_field(admin_client: Any, make_user: Any) -> None:
    make_user("olga", "operator")
    token = _form(admin_client, "/admin/users/new")
    response = admin_client.post("/admin/users/new", data={
        "csrf_token": token, "username": "olga", "full_name": "Another Olga",
        "site": "CLEAN1", "roles": ["operator"], "password": PASSWORD,
        "password_confirm": PASSWORD,
    })
    assert response.status_code == 422
    assert "never be reused" in _error_after(response.get_data(as_text=True), "username")


@pytest.mark.requirement("21 CFR 11.300(d)")
def test_admin_unlocks_a_locked_account_and_deactivates_one(
    admin_client: Any, make_user: Any, app: Any, db: Any, client: Any
) -> None:
    olga = make_user("olga", "operator")
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        user = accounts.get_user(s, "olga")
        user.failed_logins, user.locked_at = 5, user.created_at
    listing = admin_client.get("/admin/users").get_data(as_text=True)
    assert "locked" in listing and "Unlock olga" in listing
    token = csrf_from(listing)
    assert admin_client.post("/admin/users/olga/unlock",
                             data={"csrf_token": token}).status_code == 302
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        assert accounts.authenticate(s, "olga", olga.password).locked_at is None

    response = admin_client.post("/admin/users/olga/deactivate",
                                 data={"csrf_token": token, "reason": "left the company"})
    assert response.status_code == 302
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        assert accounts.get_user(s, "olga").active is False
    events = audit_events(db, entity_type="user", entity_id="olga")
    assert events[-1]["reason"] == "left the company"
    # Unknown user: a message, never a 500.
    missing = admin_client.post("/admin/users/nobody/unlock", data={"csrf_token": token})
    assert missing.status_code == 302
    assert "no user" in admin_client.get("/admin/users").get_data(as_text=True)


def test_admin_creates_a_site_and_sees_field_errors(admin_client: Any) -> None:
    token = _form(admin_client, "/admin/sites")
    bad = admin_client.post("/admin/sites", data={
        "csrf_token": token, "code": "bad code", "name": "", "kind": "moon",
        "timezone": "Mars/Olympus",
    })
    assert bad.status_code == 422
    html = bad.get_data(as_text=True)
    assert "dashes" in _error_after(html, "code")
    assert "empty" in _error_after(html, "name")
    assert "collection" in _error_after(html, "kind")
    assert "IANA" in _error_after(html, "timezone")
    ok = admin_client.post("/admin/sites", data={
        "csrf_token": token, "code": "hosp-east", "name": "East Hospital",
        "kind": "treatment", "timezone": "Europe/Vienna",
    })
    assert ok.status_code == 302
    listing = admin_client.get("/admin/sites").get_data(as_text=True)
    assert 'data-site="HOSP-EAST"' in listing and "Europe/Vienna" in listing
    again = admin_client.post("/admin/sites", data={
        "csrf_token": token, "code": "HOSP-EAST", "name": "Twice", "kind": "treatment",
        "timezone": "UTC",
    })
    assert again.status_code == 422
    assert "already exists" in _error_after(again.get_data(as_text=True), "code")


@pytest.mark.requirement("21 CFR 11.10(g)")
@pytest.mark.parametrize("url", ["/admin/users", "/admin/users/new", "/admin/sites"])
def test_admin_pages_are_for_admins_only(client: Any, make_user: Any, url: str) -> None:
    page_login(client, make_user("quentin", "qa"))
    assert client.get(url, headers=HTML).status_code == 403
    token = csrf_from(client.get("/").get_data(as_text=True))
    response = client.post("/admin/sites", data={
        "csrf_token": token, "code": "X1", "name": "X", "kind": "treatment", "timezone": "UTC",
    }, headers=HTML)
    assert response.status_code == 403


@pytest.mark.requirement("21 CFR 11.10(d)")
def test_admin_forms_without_csrf_are_refused(admin_client: Any, make_user: Any,
                                              app: Any, db: Any) -> None:
    make_user("olga", "operator")
    response = admin_client.post("/admin/users/olga/deactivate", data={"reason": "x"},
                                 headers=HTML)
    assert response.status_code == 403
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        assert accounts.get_user(s, "olga").active is True


def test_control_characters_in_names_are_field_errors_on_both_databases(
    admin_client: Any,
) -> None:
    # PostgreSQL cannot store NUL: without the check this was a 500 there.
    token = csrf_from(admin_client.get("/admin/sites").get_data(as_text=True))
    user = admin_client.post("/admin/users/new", data={
        "csrf_token": token, "username": "nul", "full_name": "Nina\x00Nurse", "site": "CLEAN1",
        "roles": ["operator"], "password": PASSWORD, "password_confirm": PASSWORD,
    })
    assert user.status_code == 422
    assert "control characters" in _error_after(user.get_data(as_text=True), "full_name")
    site = admin_client.post("/admin/sites", data={
        "csrf_token": token, "code": "X1", "name": "East\x00", "kind": "treatment",
        "timezone": "UTC",
    })
    assert site.status_code == 422
    assert "control characters" in _error_after(site.get_data(as_text=True), "name")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    username=st.one_of(st.text(max_size=70), st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)),
    full_name=st.text(max_size=30),
    email=st.text(max_size=30), site=st.sampled_from(["CLEAN1", "", "NOPE", "clean1 "]),
    roles=st.lists(st.sampled_from(["operator", "qa", "root", "", "admin\x00"]), max_size=3),
    password=st.one_of(st.text(max_size=20), st.just(PASSWORD)),
    code=st.one_of(st.text(max_size=40), st.from_regex(r"[A-Z][A-Z0-9]{0,8}", fullmatch=True)),
    kind=st.one_of(st.text(max_size=15), st.just("treatment")),
    timezone=st.one_of(st.text(max_size=30), st.just("UTC")),
)
def test_random_admin_form_input_never_breaks_the_page(
    admin_client: Any, username: str, full_name: str, email: str, site: str,
    roles: list[str], password: str, code: str, kind: str, timezone: str,
) -> None:
    token = csrf_from(admin_client.get("/admin/sites").get_data(as_text=True))
    user = admin_client.post("/admin/users/new", headers=HTML, data={
        "csrf_token": token, "username": username, "full_name": full_name, "email": email,
        "site": site, "roles": roles, "password": password, "password_confirm": password,
    })
    assert user.status_code in (302, 422), user.get_data(as_text=True)[:500]
    if user.status_code == 422:
        assert 'class="field-error"' in user.get_data(as_text=True)
    site_ = admin_client.post("/admin/sites", headers=HTML, data={
        "csrf_token": token, "code": code, "name": full_name, "kind": kind,
        "timezone": timezone,
    })
    assert site_.status_code in (302, 422), site_.get_data(as_text=True)[:500]


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_admin_changes_and_removes_a_users_alert_email(admin_client: Any, make_user: Any,
                                                        db: Any) -> None:
    make_user("olga", "operator")
    token = csrf_from(admin_client.get("/admin/users").get_data(as_text=True))
    admin_client.post("/admin/users/olga/email",
                      data={"csrf_token": token, "email": " olga@example.org "})
    listing = admin_client.get("/admin/users").get_data(as_text=True)
    assert "now go to olga@example.org" in listing and 'value="olga@example.org"' in listing
    admin_client.post("/admin/users/olga/email", data={"csrf_token": token, "email": "oops"})
    listing = admin_client.get("/admin/users").get_data(as_text=True)
    assert "Not changed" in listing and "like name@example.org" in listing
    admin_client.post("/admin/users/olga/email", data={"csrf_token": token, "email": ""})
    assert "address removed" in admin_client.get("/admin/users").get_data(as_text=True)
    changes = [e for e in audit_events(db, entity_type="user", entity_id="olga")
               if e["action"] == "update"]
    assert [json.loads(e["record"])["new"]["email"] for e in changes] == [
        "olga@example.org", None]
    assert json.loads(changes[0]["record"])["old"]["email"] is None
    assert all(e["username"] == "ada" for e in changes)


def test_user_email_over_the_api(make_user: Any, login: Any) -> None:
    admin, olga = make_user("adm", "admin"), make_user("olga", "operator")
    api = login(admin)
    response = api.post("/api/v1/users/olga/email", json={"email": "olga@example.org"})
    assert response.status_code == 200 and response.get_json()["email"] == "olga@example.org"
    assert_problem(api.post("/api/v1/users/olga/email", json={"email": "x@"}), 422)
    assert_problem(api.post("/api/v1/users/nobody/email", json={"email": None}), 404)
    assert_problem(login(olga).post("/api/v1/users/olga/email", json={"email": None}), 403)
    assert api.post("/api/v1/users/olga/email", json={"email": None}).get_json()["email"] is None
