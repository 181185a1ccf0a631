"""Accounts against insiders (issue 14): passwords, revocable sessions and tokens,
failed-password rate limits, lockout alerts, scoped alerts, minimised patient data.

21 CFR 11.10(d) (limited access), 11.300(b) (passwords checked, changed, aged),
11.300(d) (attempts detected and reported at once), Annex 11 §12 (security).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from gmp_mes import accounts, registry
from gmp_mes.audit import Actor
from gmp_mes.clock import clock, utcnow
from tests.conftest import PASSWORD, sig
from tests.helpers import assert_problem, audit_events, failing
from tests.test_batches_fixtures import Plant, good_values, plant_fixture  # noqa: F401
from tests.test_identity_fixtures import (  # noqa: F401
    APHERESIS,
    OTHER_TREATMENT,
    World,
    world_fixture,
)
from tests.test_pages_core import csrf_from, page_login

HTML = {"Accept": "text/html"}
NEW_PASSWORD = "violet-lantern-harbour"


def token_of(client: Any, username: str, password: str) -> Any:
    return client.post("/api/v1/auth/tokens", json={"username": username, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def user_row(db: Any, username: str) -> dict[str, Any]:
    with db.engine.connect() as c:
        return dict(c.execute(text("SELECT * FROM app_user WHERE username = :u"),
                              {"u": username}).one()._mapping)


def open_alerts(db: Any, kind: str) -> list[dict[str, Any]]:
    with db.engine.connect() as c:
        rows = c.execute(text("SELECT * FROM alert WHERE kind = :k ORDER BY id"), {"k": kind})
        return [dict(r._mapping) for r in rows]


# --- sessions and tokens ---------------------------------------------------------------------

@pytest.mark.requirement("EU GMP Annex 11 §12")
@pytest.mark.requirement("21 CFR 11.10(d)")
def test_a_logged_out_cookie_is_worthless(app, make_user) -> None:
    ivy = make_user("ivy", "operator")
    browser = app.test_client()
    page_login(browser, ivy)
    assert browser.get("/", headers=HTML).status_code == 200
    cookie = browser.get_cookie("session").value  # what a colleague copies off the workstation
    # Logout by GET only shows the button: a link or an image cannot log anyone out.
    assert browser.get("/logout", headers=HTML).status_code == 200
    assert browser.get("/", headers=HTML).status_code == 200
    csrf = csrf_from(browser.get("/").get_data(as_text=True))
    assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 302
    thief = app.test_client()
    thief.set_cookie("session", cookie)
    response = thief.get("/", headers=HTML)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    actions = [e["action"] for e in audit_events(app.extensions["gmp_mes.db"], entity_id="ivy")]
    assert "auth.session_started" in actions and "auth.revoked" in actions


@pytest.mark.requirement("EU GMP Annex 11 §12")
def test_a_new_login_on_the_workstation_ends_the_previous_session(app, make_user) -> None:
    browser = app.test_client()
    page_login(browser, make_user("ivy", "operator"))
    first = browser.get_cookie("session").value
    page_login(browser, make_user("max", "operator"))  # the next shift, same workstation
    old = app.test_client()
    old.set_cookie("session", first)
    assert old.get("/", headers=HTML).status_code == 302
    assert browser.get("/", headers=HTML).status_code == 200


@pytest.mark.requirement("EU GMP Annex 11 §12")
def test_logout_needs_the_csrf_token(app, make_user) -> None:
    browser = app.test_client()
    page_login(browser, make_user("ivy", "operator"))
    assert browser.post("/logout", data={}).status_code == 403
    assert browser.get("/", headers=HTML).status_code == 200  # still logged in


@pytest.mark.requirement("EU GMP Annex 11 §12")
@pytest.mark.requirement("21 CFR 11.10(d)")
def test_a_revoked_token_gets_401(client, make_user) -> None:
    gus = make_user("gus", "operator")
    token = token_of(client, "gus", gus.password).get_json()["token"]
    other = token_of(client, "gus", gus.password).get_json()["token"]
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200
    assert client.delete("/api/v1/auth/tokens/current", headers=bearer(token)).status_code == 204
    assert_problem(client.get("/api/v1/me", headers=bearer(token)), 401, "unauthenticated")
    assert_problem(client.delete("/api/v1/auth/tokens/current", headers=bearer(token)), 401)
    # Only that token ended: the device's other token still works.
    assert client.get("/api/v1/me", headers=bearer(other)).status_code == 200


@pytest.mark.requirement("EU GMP Annex 11 §12")
def test_admin_lists_and_revokes_a_users_tokens(app, client, make_user, login) -> None:
    admin = login(make_user("adm", "admin"))
    gus = make_user("gus", "operator")
    token = token_of(client, "gus", gus.password).get_json()["token"]
    browser = app.test_client()
    page_login(browser, gus)
    listed = admin.get("/api/v1/users/gus/tokens").get_json()
    assert {t["kind"] for t in listed} == {"token", "session"}
    assert all(t["active"] and "token_digest" not in t for t in listed)
    (api_token,) = [t for t in listed if t["kind"] == "token"]
    assert_problem(login(gus).get("/api/v1/users/gus/tokens"), 403, "forbidden_role")
    revoked = admin.client.delete(f"/api/v1/users/gus/tokens/{api_token['id']}",
                                  headers=bearer(admin.token), json={"reason": "lost scanner"})
    assert revoked.status_code == 200 and revoked.get_json()["revoke_reason"] == "lost scanner"
    assert_problem(client.get("/api/v1/me", headers=bearer(token)), 401, "unauthenticated")
    assert_problem(admin.client.delete(f"/api/v1/users/gus/tokens/{api_token['id']}",
                                       headers=bearer(admin.token)), 409)
    # The admin page ends the page session too.
    admin_browser = app.test_client()
    page_login(admin_browser, make_user("adm2", "admin"))
    page = admin_browser.get("/admin/users/gus/tokens").get_data(as_text=True)
    (session_row,) = [t for t in listed if t["kind"] == "session"]
    assert f"End session {session_row['id']}" in page
    response = admin_browser.post(f"/admin/users/gus/tokens/{session_row['id']}/revoke",
                                  data={"csrf_token": csrf_from(page)})
    assert response.status_code == 302
    assert browser.get("/", headers=HTML).status_code == 302


@pytest.mark.requirement("EU GMP Annex 11 §12")
def test_a_page_session_has_an_absolute_lifetime(app, make_user) -> None:
    settings = app.config["GMP_SETTINGS"]
    clock.freeze(utcnow())
    browser = app.test_client()
    page_login(browser, make_user("ivy", "operator"))
    step = timedelta(minutes=settings.session_ttl_minutes - 1)  # always active, never idle
    elapsed = timedelta(0)
    while elapsed + step < timedelta(minutes=settings.session_max_minutes):
        clock.advance(step)
        elapsed += step
        assert browser.get("/", headers=HTML).status_code == 200, elapsed
    clock.advance(step)
    response = browser.get("/", headers=HTML)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.requirement("EU GMP Annex 11 §12")
@pytest.mark.requirement("21 CFR 11.300(d)")
def test_lockout_ends_every_token_for_good(client, make_user, login, anonymous) -> None:
    admin = login(make_user("adm", "admin"))
    hugo = make_user("hugo", "qc")
    token = token_of(client, "hugo", hugo.password).get_json()["token"]
    wrong = {"username": "hugo", "password": "nope"}
    failing(lambda: anonymous.post("/api/v1/auth/tokens", json=wrong), 5)
    assert admin.post("/api/v1/users/hugo/unlock").status_code == 200
    # Unlocking gives the person access again, not the tokens issued before the lockout.
    assert_problem(client.get("/api/v1/me", headers=bearer(token)), 401, "unauthenticated")
    assert login(hugo).get("/api/v1/me").status_code == 200


# --- passwords ---------------------------------------------------------------------------------

@pytest.mark.requirement("21 CFR 11.300(b)")
def test_an_admin_set_password_is_one_time(client, make_user, login, db) -> None:
    admin = login(make_user("adm", "admin"))
    created = admin.post("/api/v1/users", json={
        "username": "nina", "full_name": "Nina N", "password": PASSWORD, "roles": ["qc"],
        "site": "CLEAN1"})
    assert created.status_code == 201 and created.get_json()["must_change_password"] is True
    assert_problem(token_of(client, "nina", PASSWORD), 403, "password_change_required")
    # A wrong password is still 401: the 403 never confirms a guess.
    assert_problem(token_of(client, "nina", "not-the-password"), 401, "invalid_credentials")
    changed = client.post("/api/v1/auth/password", json={
        "username": "nina", "current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["must_change_password"] is False
    assert_problem(token_of(client, "nina", PASSWORD), 401, "invalid_credentials")
    assert token_of(client, "nina", NEW_PASSWORD).status_code == 201
    record = "\n".join(e["record"] for e in audit_events(db, entity_id="nina"))
    assert PASSWORD not in record and NEW_PASSWORD not in record
    assert "password changed by its owner" in record


@pytest.mark.requirement("21 CFR 11.300(b)")
def test_admin_reset_gives_a_one_time_password_and_ends_sessions(client, make_user, login,
                                                                 db) -> None:
    admin = login(make_user("adm", "admin"))
    olga = make_user("olga", "operator")
    old_token = token_of(client, "olga", olga.password).get_json()["token"]
    assert_problem(admin.post("/api/v1/users/adm/password-reset"), 409)
    assert_problem(login(olga).post("/api/v1/users/olga/password-reset"), 403, "forbidden_role")
    reset = admin.post("/api/v1/users/olga/password-reset")
    assert reset.status_code == 201
    one_time = reset.get_json()["one_time_password"]
    assert_problem(client.get("/api/v1/me", headers=bearer(old_token)), 401)
    assert_problem(token_of(client, "olga", olga.password), 401, "invalid_credentials")
    assert_problem(token_of(client, "olga", one_time), 403, "password_change_required")
    assert client.post("/api/v1/auth/password", json={
        "username": "olga", "current_password": one_time,
        "new_password": NEW_PASSWORD}).status_code == 200
    assert token_of(client, "olga", NEW_PASSWORD).status_code == 201
    trail = "\n".join(e["record"] for e in audit_events(db, entity_id="olga"))
    assert one_time not in trail and "password reset by an administrator" in trail


@pytest.mark.requirement("21 CFR 11.300(b)")
def test_the_login_page_sends_a_one_time_password_to_the_change_page(app, client, make_user,
                                                                    login, db) -> None:
    admin = login(make_user("adm", "admin"))
    admin.post("/api/v1/users", json={"username": "nina", "full_name": "Nina N",
                                      "password": PASSWORD, "roles": ["qc"], "site": "CLEAN1"})
    browser = app.test_client()
    csrf = csrf_from(browser.get("/login").get_data(as_text=True))
    response = browser.post("/login?next=/alerts", data={
        "username": "nina", "password": PASSWORD, "csrf_token": csrf})
    assert response.status_code == 302 and "/account/password" in response.headers["Location"]
    assert browser.get("/", headers=HTML).status_code == 302  # no session was given
    page = browser.get(response.headers["Location"]).get_data(as_text=True)
    assert 'value="nina"' in page
    form = {"csrf_token": csrf_from(page), "username": "nina", "current_password": PASSWORD,
            "new_password": "nina-password-1", "new_password_confirm": "nina-password-1"}
    refused = browser.post("/account/password", data=form, headers=HTML)
    assert refused.status_code == 422
    assert "must not contain the user name" in refused.get_data(as_text=True)
    form.update(new_password=NEW_PASSWORD, new_password_confirm=NEW_PASSWORD)
    done = browser.post("/account/password?next=/alerts", data=form)
    assert done.status_code == 302 and "/login" in done.headers["Location"]
    page_login(browser, type("P", (), {"username": "nina", "password": NEW_PASSWORD})())
    assert browser.get("/", headers=HTML).status_code == 200


@pytest.mark.requirement("21 CFR 11.300(b)")
def test_a_logged_in_user_changes_their_password_on_the_page(app, make_user, client) -> None:
    olga = make_user("olga", "operator")
    browser = app.test_client()
    page_login(browser, olga)
    page = browser.get("/account/password").get_data(as_text=True)
    assert "User <strong>olga</strong>" in page
    wrong = browser.post("/account/password", headers=HTML, data={
        "csrf_token": csrf_from(page), "current_password": "not-my-password",
        "new_password": NEW_PASSWORD, "new_password_confirm": NEW_PASSWORD})
    assert wrong.status_code == 401
    assert "wrong user name or current password" in wrong.get_data(as_text=True)
    token = token_of(client, "olga", olga.password).get_json()["token"]
    done = browser.post("/account/password", data={
        "csrf_token": csrf_from(page), "current_password": olga.password,
        "new_password": NEW_PASSWORD, "new_password_confirm": NEW_PASSWORD})
    assert done.status_code == 302
    # A password change ends every session and token of the person at once.
    assert browser.get("/", headers=HTML).status_code == 302
    assert_problem(client.get("/api/v1/me", headers=bearer(token)), 401)
    assert token_of(client, "olga", NEW_PASSWORD).status_code == 201


@pytest.mark.requirement("21 CFR 11.300(b)")
@pytest.mark.parametrize(("new", "message"), [
    ("short-pw", "at least 12 characters"),
    ("password1234", "commonly used or breached"),
    ("Qwertyuiop123", "commonly used or breached"),
    ("i-am-olga-the-operator", "must not contain the user name"),
    (PASSWORD, "must differ from the current password"),
    (" padded-password ", "white space"),
])
def test_password_policy_refusals_are_422_field_errors(client, make_user, new, message) -> None:
    make_user("olga", "operator")
    response = client.post("/api/v1/auth/password", json={
        "username": "olga", "current_password": PASSWORD, "new_password": new})
    body = assert_problem(response, 422, "validation_error")
    assert any(message in m for m in body["errors"]["new_password"]), body
    assert new not in response.get_data(as_text=True)
    assert token_of(client, "olga", PASSWORD).status_code == 201  # nothing changed


@pytest.mark.requirement("21 CFR 11.300(b)")
def test_policy_applies_when_an_admin_creates_a_user(make_user, login) -> None:
    admin = login(make_user("adm", "admin"))
    body = assert_problem(admin.post("/api/v1/users", json={
        "username": "nina", "full_name": "Nina N", "password": "1234567890qwerty",
        "roles": ["qc"], "site": "CLEAN1"}), 422, "validation_error")
    assert "errors" in body and "password" in body["errors"]


@pytest.mark.requirement("21 CFR 11.300(b)")
def test_a_wrong_current_password_counts_toward_lockout(client, make_user, db) -> None:
    make_user("olga", "operator")
    response = client.post("/api/v1/auth/password", json={
        "username": "olga", "current_password": "guess-number-one", "new_password": NEW_PASSWORD})
    assert_problem(response, 401, "invalid_credentials")
    assert user_row(db, "olga")["failed_logins"] == 1


@pytest.fixture
def expiring(app_config: dict[str, Any]) -> dict[str, Any]:
    app_config["password_max_age_days"] = 90
    return app_config


@pytest.mark.requirement("21 CFR 11.300(b)")
def test_an_expired_password_must_be_changed(expiring, client, make_user) -> None:
    clock.freeze(utcnow())
    make_user("olga", "operator")
    assert token_of(client, "olga", PASSWORD).status_code == 201
    clock.advance(timedelta(days=90))
    problem = assert_problem(token_of(client, "olga", PASSWORD), 403, "password_change_required")
    assert "expired" in problem["detail"]
    assert client.post("/api/v1/auth/password", json={
        "username": "olga", "current_password": PASSWORD,
        "new_password": NEW_PASSWORD}).status_code == 200
    assert token_of(client, "olga", NEW_PASSWORD).status_code == 201


@pytest.mark.requirement("21 CFR 11.300(b)")
def test_cli_must_change_and_own_password_change(runner, make_site, db, client) -> None:
    make_site("CLEAN1")
    result = runner.invoke(args=["users", "create", "zed", "--role", "qa", "--site", "CLEAN1",
                                 "--password-stdin", "--must-change"], input=f"{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "one-time" in result.output
    assert_problem(token_of(client, "zed", PASSWORD), 403, "password_change_required")
    result = runner.invoke(args=["users", "password", "zed", "--password-stdin"],
                           input=f"{PASSWORD}\n{NEW_PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert token_of(client, "zed", NEW_PASSWORD).status_code == 201
    # Typed at the console by the person: not one-time.
    result = runner.invoke(args=["users", "create", "yan", "--role", "qc", "--site", "CLEAN1",
                                 "--password-stdin"], input=f"{PASSWORD}\n")
    assert result.exit_code == 0 and token_of(client, "yan", PASSWORD).status_code == 201
    result = runner.invoke(args=["users", "reset-password", "yan"])
    assert result.exit_code == 0
    one_time = result.output.strip().rsplit(" ", 1)[-1]
    assert_problem(token_of(client, "yan", one_time), 403, "password_change_required")
    bad = runner.invoke(args=["users", "password", "yan", "--password-stdin"],
                        input=f"{one_time}\npassword\n")
    assert bad.exit_code == 1 and "at least 12" in bad.output


# --- rate limits and lockout -------------------------------------------------------------------

@pytest.mark.requirement("21 CFR 11.300(d)")
def test_failed_logins_beyond_the_limit_get_429_with_retry_after(client, make_user, db) -> None:
    make_user("bob", "operator")
    limit = 3  # the default "3 per 5 minutes" per account
    for _ in range(limit):
        assert_problem(token_of(client, "bob", "wrong-password"), 401, "invalid_credentials")
    events = len(audit_events(db))
    response = token_of(client, "bob", PASSWORD)  # even the right password waits
    body = assert_problem(response, 429, "rate_limited")
    assert 0 < int(response.headers["Retry-After"]) <= 300
    assert body["retry_after"] == int(response.headers["Retry-After"])
    assert len(audit_events(db)) == events  # a refused attempt writes nothing
    assert user_row(db, "bob")["failed_logins"] == limit
    clock.freeze(utcnow() + timedelta(seconds=int(response.headers["Retry-After"]) + 1))
    assert token_of(client, "bob", PASSWORD).status_code == 201


@pytest.fixture
def tight(app_config: dict[str, Any]) -> dict[str, Any]:
    app_config["rate_limit_client"] = "4 per 1 minute"
    return app_config


@pytest.mark.requirement("21 CFR 11.300(d)")
def test_one_client_guessing_many_accounts_is_limited_and_reported(tight, client, make_user,
                                                                   db) -> None:
    for name in ("ann", "ben", "cat", "dan", "eve"):
        make_user(name, "operator")
    for name in ("ann", "ben", "cat", "dan"):
        assert_problem(token_of(client, name, "spray-password"), 401, "invalid_credentials")
    assert_problem(token_of(client, "eve", "spray-password"), 429, "rate_limited")
    # A guess at a name that does not exist is limited and counted the same way.
    assert_problem(token_of(client, "nobody", "spray-password"), 429, "rate_limited")
    (burst,) = open_alerts(db, "auth_failures_burst")
    assert burst["roles"] == "admin" and burst["subject_type"] == "client"


@pytest.mark.requirement("21 CFR 11.300(d)")
def test_a_name_no_user_can_have_is_a_plain_failure(client, make_user, db) -> None:
    make_user("bob", "operator")
    for name in ("b\tob", "b\u202eob"):
        assert_problem(token_of(client, name, PASSWORD), 401, "invalid_credentials")
    # A control character is refused by the edge from the input alone (gmp_mes.edge): it
    # says nothing about any account.
    problem = assert_problem(token_of(client, "bo\x00b", PASSWORD), 422, "validation_error")
    assert list(problem["errors"]) == ["username"] and "bob" not in str(problem)
    assert user_row(db, "bob")["failed_logins"] == 0  # none of them counted against bob
    assert token_of(client, "bob", PASSWORD).status_code == 201


@pytest.mark.requirement("21 CFR 11.300(d)")
def test_parallel_failures_count_no_faster_than_the_limit(app, make_user, db) -> None:
    """Many wrong passwords at once for one account: the check in front of the password
    may let a few more through, but only the limit's worth count toward lockout."""
    import threading

    make_user("bob", "operator")
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def attempt(n: int) -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(token_of(client, "bob", f"parallel-guess-{n}").status_code)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses) <= {401, 429} and statuses.count(401) >= 3, statuses
    row = user_row(db, "bob")
    assert row["failed_logins"] == 3 and row["locked_at"] is None


@pytest.mark.requirement("21 CFR 11.300(d)")
def test_a_lockout_is_reported_to_admins_at_once(client, make_user, login, anonymous,
                                                 db) -> None:
    admin = login(make_user("adm", "admin"))
    make_user("bob", "operator")
    wrong = {"username": "bob", "password": "wrong-password"}
    failing(lambda: anonymous.post("/api/v1/auth/tokens", json=wrong), 5)
    assert user_row(db, "bob")["locked_at"] is not None
    (alert,) = open_alerts(db, "account_locked")
    assert alert["subject_id"] == "bob" and alert["severity"] == "major"
    # E-mailed (where configured) through the alert delivery path to the admins.
    from gmp_mes import alerts, notify

    with db.transaction(actor=Actor.system("test")) as s:
        accounts.set_email(s, "adm", "adm@example.org")
    with db.session() as s:
        assert notify.recipients(s, alerts.get_alert(s, alert["id"])) == ["adm@example.org"]
    listed = admin.get("/api/v1/alerts?kind=account_locked").get_json()
    assert [a["id"] for a in listed] == [alert["id"]]
    assert login(admin_person := make_user("op9", "operator")).get(
        "/api/v1/alerts?kind=account_locked").get_json() == []
    assert admin_person.username == "op9"


@pytest.mark.requirement("21 CFR 11.300(d)")
def test_the_configured_maximum_applies_to_signatures_too(app_config, make_user, db) -> None:
    """Set ``max_failed_logins = 2``: two wrong signature passwords lock the account."""
    from gmp_mes import create_app
    from gmp_mes.errors import SignatureRejected
    from gmp_mes.signatures import SignatureInput, sign

    make_user("quinn", "qa")
    strict = create_app({**app_config, "max_failed_logins": 2})
    strict_db = strict.extensions["gmp_mes.db"]
    try:
        for _ in range(2):
            with pytest.raises(SignatureRejected) as caught, strict_db.transaction(
                    actor=Actor.system("test")) as s:
                sign(s, accounts.get_user(s, "quinn"), SignatureInput("nope", "approved"),
                     entity_type="site", entity_id="CLEAN1", content={})
            with strict_db.transaction(actor=Actor.system("security")) as s:
                caught.value.follow_up(s)
        assert user_row(db, "quinn")["locked_at"] is not None
    finally:
        strict_db.dispose()


# --- the verifier field ------------------------------------------------------------------------

def _receipt(plant: Plant, number: str, verifier: dict[str, str]) -> dict[str, Any]:
    step = plant.definition(number).step("receipt")
    assert step.critical
    return {"values": good_values(step), "signature": sig(), "verifier": verifier}


@pytest.mark.requirement("21 CFR 11.300(d)")
@pytest.mark.requirement("21 CFR 11.200(a)(1)")
def test_the_verifier_field_cannot_lock_an_account_faster_than_the_rate_limit(
        plant: Plant, login, db) -> None:
    number = plant.start()
    api = login(plant.operator)
    path = f"/api/v1/batches/{number}/steps/receipt"
    answers = [api.post(path, json=_receipt(plant, number, {"username": "quinn",
                                                            "password": f"guess-{n}"}))
               for n in range(8)]
    statuses = [a.status_code for a in answers]
    assert statuses == [401, 401, 401] + [429] * 5, statuses
    row = user_row(db, "quinn")
    assert row["failed_logins"] == 3 and row["locked_at"] is None
    # The burst is reported to the administrators at once (21 CFR 11.300(d)).
    (burst,) = open_alerts(db, "auth_failures_burst")
    assert burst["subject_type"] == "user" and burst["subject_id"] == "quinn"
    assert_problem(answers[-1], 429, "rate_limited")
    # The QA account still works: the operator did not lock it, nor keep its owner out
    # at another workstation (the account limit counts per client).
    qa_desk = plant.app.test_client()
    qa_desk.environ_base["REMOTE_ADDR"] = "127.0.0.2"
    assert token_of(qa_desk, plant.qa.username, PASSWORD).status_code == 201


@pytest.mark.requirement("21 CFR 11.300(d)")
def test_the_verifier_field_leaks_nothing(plant: Plant, login, make_user, client,
                                          db) -> None:
    make_user("dora", "qc")  # exists, right password, wrong role
    make_user("lars", "operator")  # exists, will be locked
    failing(lambda: token_of(client, "lars", "wrong-password"), 5)
    assert user_row(db, "lars")["locked_at"] is not None
    number = plant.start()
    api = login(plant.operator)
    path = f"/api/v1/batches/{number}/steps/receipt"
    tries = {
        "no such user": {"username": "nobody", "password": "whatever-pass"},
        "wrong password": {"username": plant.qa.username, "password": "whatever-pass"},
        "wrong role": {"username": "dora", "password": PASSWORD},
        "locked": {"username": "lars", "password": PASSWORD},
    }
    bodies = {}
    for what, verifier in tries.items():
        response = api.post(path, json=_receipt(plant, number, verifier))
        body = assert_problem(response, 401, "signature_rejected")
        bodies[what] = {k: body[k] for k in ("code", "detail", "errors", "title", "status")}
    first = next(iter(bodies.values()))
    assert all(body == first for body in bodies.values()), bodies
    text_of_all = str(list(bodies.values()))
    for leak in ("no such", "role", "locked", "qa", "operator", "deactivated"):
        assert leak not in text_of_all.lower(), leak
    # A control character in the name is refused from the input alone, before any account
    # is looked at (gmp_mes.edge): a field error that names no account.
    response = api.post(path, json=_receipt(plant, number, {"username": "qu\x00inn",
                                                            "password": PASSWORD}))
    problem = assert_problem(response, 422, "validation_error")
    for leak in ("no such", "role", "locked", "quinn"):
        assert leak not in str(problem).lower(), leak
    # The step was not recorded by any of them; the right second person still verifies.
    ok = api.post(path, json=_receipt(plant, number, {"username": plant.operator2.username,
                                                      "password": PASSWORD}))
    assert ok.status_code == 201, ok.get_json()


# --- alerts scoped -----------------------------------------------------------------------------

@pytest.mark.requirement("21 CFR 11.10(d)")
@pytest.mark.requirement("21 CFR 11.10(g)")
def test_an_operator_cannot_acknowledge_a_qa_alert(world: World, login, app) -> None:
    from tests.test_identity_api import _scan

    a, b = world.enrol(), world.enrol()
    bag = world.item(a["coi_id"], status="released")
    forged = world.payload(bag).replace(a["coi_id"], b["coi_id"])
    operator = login(world.operator)
    assert _scan(operator, forged).get_json()["ok"] is False
    qa = login(world.qa)
    (alert,) = [x for x in qa.get("/api/v1/alerts?status=open").get_json()
                if x["kind"] == "label_forged"]
    # The operator whose scan raised it can neither see nor silence it.
    assert all(x["id"] != alert["id"] for x in operator.get("/api/v1/alerts").get_json())
    assert_problem(operator.post(f"/api/v1/alerts/{alert['id']}/acknowledge"), 403,
                   "forbidden_role")
    browser = app.test_client()
    page_login(browser, world.operator)
    csrf = csrf_from(browser.get("/").get_data(as_text=True))
    browser.post(f"/alerts/{alert['id']}/acknowledge", data={"csrf_token": csrf})
    assert qa.get(f"/api/v1/alerts/{alert['id']}").get_json()["status"] == "open"
    acked = qa.post(f"/api/v1/alerts/{alert['id']}/acknowledge", json={"note": "label seized"})
    assert acked.status_code == 200 and acked.get_json()["acknowledged_by"] == world.qa.username


# --- patient data minimised --------------------------------------------------------------------

@pytest.mark.requirement("GDPR Art. 5(1)(c)")
@pytest.mark.requirement("21 CFR 11.10(d)")
def test_a_clinician_of_another_site_sees_initials_only(world: World, login, make_user,
                                                        app) -> None:
    patient = world.enrol(given_name="Ada", family_name="Lovelace")
    coi_id = patient["coi_id"]
    world.collect(coi_id)
    identity = {"given_name", "family_name", "date_of_birth", "mrn"}
    elsewhere = make_user("doc2", "clinician", site=OTHER_TREATMENT)
    body = login(elsewhere).get(f"/api/v1/patients/{coi_id}").get_json()
    assert identity.isdisjoint(body) and body["initials"] == "A.L."
    assert body["identity_visible"] is False and body["coi_id"] == coi_id
    assert "Lovelace" not in str(body) and "1970" not in str(body)
    operator = login(world.operator).get(f"/api/v1/patients/{coi_id}").get_json()
    assert identity.isdisjoint(operator)
    for person in (world.clinician, world.qa, make_user("adm", "admin"),
                   make_user("nurse", "clinician", site=APHERESIS)):
        full = login(person).get(f"/api/v1/patients/{coi_id}").get_json()
        assert full["family_name"] == "Lovelace" and full["mrn"], person.username
        assert full["identity_visible"] is True
    browser = app.test_client()
    page_login(browser, elsewhere)
    page = browser.get(f"/patients/{coi_id}").get_data(as_text=True)
    assert "Patient A.L." in page and "Lovelace" not in page and "1970-05-17" not in page
    own = app.test_client()
    page_login(own, world.clinician)
    assert "LOVELACE" in own.get(f"/patients/{coi_id}").get_data(as_text=True)


@pytest.mark.requirement("21 CFR 11.300(b)")
def test_admin_page_resets_a_password_shown_once_never_in_the_cookie(app, make_user,
                                                                     client) -> None:
    olga = make_user("olga", "operator")
    admin = app.test_client()
    page_login(admin, make_user("adm", "admin"))
    listing = admin.get("/admin/users").get_data(as_text=True)
    response = admin.post("/admin/users/olga/password-reset",
                          data={"csrf_token": csrf_from(listing)})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    one_time = page.split('id="one-time-password">')[1].split("<")[0]
    assert len(one_time) >= 12
    assert one_time not in (response.headers.get("Set-Cookie") or "")
    assert response.headers["Cache-Control"] == "no-store"
    assert_problem(token_of(client, "olga", olga.password), 401, "invalid_credentials")
    assert_problem(token_of(client, "olga", one_time), 403, "password_change_required")
    assert "one-time password" in admin.get("/admin/users").get_data(as_text=True)
    # Without the CSRF token nothing is reset.
    assert admin.post("/admin/users/olga/password-reset", data={}).status_code == 403


@pytest.mark.requirement("21 CFR 11.300(d)")
def test_the_login_page_answers_429_when_limited(app, make_user) -> None:
    make_user("bob", "operator")
    browser = app.test_client()
    csrf = csrf_from(browser.get("/login").get_data(as_text=True))
    form = {"username": "bob", "password": "wrong-password", "csrf_token": csrf}
    for _ in range(3):
        assert browser.post("/login", data=form, headers=HTML).status_code == 401
    limited = browser.post("/login", data={**form, "password": PASSWORD}, headers=HTML)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert "too many failed passwords" in limited.get_data(as_text=True)
    assert browser.get("/", headers=HTML).status_code == 302  # no session


_examples = iter(range(10**9))


@pytest.mark.requirement("21 CFR 11.300(d)")
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gaps=st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=25))
def test_the_database_limit_counts_like_a_fixed_window(db, gaps) -> None:
    """Model check of the `limits` storage over the database: a failure counts while
    its window (opened by the first failure after the last one expired) holds fewer
    than the limit; so no window ever counts more than the limit."""
    from gmp_mes.ratelimit import Limits

    limits = Limits.of("3 per 5 minutes", "1000 per 1 hour")
    name = f"model{next(_examples)}"
    clock.freeze(utcnow())
    opened, hits = None, 0
    try:
        for gap in gaps:
            clock.advance(timedelta(seconds=gap))
            now = utcnow()
            if opened is None or now >= opened + timedelta(minutes=5):
                opened, hits = now, 0
            hits += 1
            with db.transaction(actor=Actor.system("test")) as s:
                counted, _ = limits.count_failure(s.connection(), name, "127.0.0.1")
                blocked = limits.blocked(s.connection(), name, "127.0.0.1")
            assert counted == (hits <= 3), (gaps, hits)
            assert (blocked is not None) == (hits >= 3)
    finally:
        clock.unfreeze()


@pytest.mark.requirement("21 CFR 11.300(b)")
@pytest.mark.requirement("EU GMP Annex 11 §12")
def test_a_one_time_login_on_a_logged_in_browser_ends_the_previous_session(app, make_user,
                                                                            login) -> None:
    admin = make_user("adm", "admin")
    login(admin).post("/api/v1/users", json={"username": "nina", "full_name": "Nina N",
                                             "password": PASSWORD, "roles": ["qc"],
                                             "site": "CLEAN1"})
    browser = app.test_client()
    page_login(browser, admin)  # the administrator walks away without logging out
    csrf = csrf_from(browser.get("/login").get_data(as_text=True))
    response = browser.post("/login", data={"username": "nina", "password": PASSWORD,
                                            "csrf_token": csrf})
    assert "/account/password" in response.headers["Location"]
    page = browser.get(response.headers["Location"]).get_data(as_text=True)
    assert 'value="nina"' in page and "<strong>adm</strong>" not in page
    assert browser.get("/admin/users", headers=HTML).status_code == 302  # not the admin


def test_the_sweep_drops_ended_rate_limit_windows(app, client, make_user, db) -> None:
    from gmp_mes import ratelimit
    from tests.helpers import count

    make_user("bob", "operator")
    clock.freeze(utcnow())
    assert_problem(token_of(client, "bob", "wrong-password"), 401)
    assert count(db, "rate_limit") == 2  # bob at this client, and this client
    ratelimit.job(app)
    assert count(db, "rate_limit") == 2  # windows still open
    clock.advance(timedelta(minutes=6))
    ratelimit.job(app)
    assert count(db, "rate_limit") == 0
    assert ratelimit.job in registry.of(app).jobs
