"""Login, tokens, lockout, role checks (21 CFR 11.10(d), 11.10(g), 11.300)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gmp_mes.clock import clock, utcnow
from tests.helpers import assert_problem, audit_events, failing


@pytest.mark.requirement("21 CFR 11.10(d)")
def test_token_grants_access(make_user, login) -> None:
    alice = make_user("alice", "admin")
    api = login(alice)
    response = api.get("/api/v1/me")
    assert response.status_code == 200
    assert response.get_json()["username"] == "alice"
    assert response.get_json()["roles"] == ["admin"]


@pytest.mark.requirement("21 CFR 11.10(d)")
def test_no_token_is_401_problem(anonymous) -> None:
    assert_problem(anonymous.get("/api/v1/me"), 401, "unauthenticated")


def test_garbage_token_is_401(anonymous) -> None:
    anonymous.token = "not-a-token"
    assert_problem(anonymous.get("/api/v1/me"), 401, "unauthenticated")


@pytest.mark.requirement("21 CFR 11.300(d)")
def test_five_failed_logins_lock_the_account(make_user, anonymous, db) -> None:
    bob = make_user("bob", "operator")
    wrong = {"username": "bob", "password": "wrong-password"}
    for response in failing(lambda: anonymous.post("/api/v1/auth/tokens", json=wrong), 5):
        assert_problem(response, 401, "invalid_credentials")
    response = anonymous.post(
        "/api/v1/auth/tokens", json={"username": "bob", "password": bob.password}
    )
    assert_problem(response, 401, "account_locked")
    failures = [e for e in audit_events(db, entity_id="bob") if e["action"] == "auth.failed"]
    assert len(failures) == 5


@pytest.mark.requirement("21 CFR 11.300(d)")
def test_admin_unlocks_a_locked_account(make_user, anonymous, login) -> None:
    admin = make_user("root1", "admin")
    carol = make_user("carol", "qc")
    wrong = {"username": "carol", "password": "nope"}
    failing(lambda: anonymous.post("/api/v1/auth/tokens", json=wrong), 5)
    assert_problem(
        anonymous.post(
            "/api/v1/auth/tokens", json={"username": "carol", "password": carol.password}
        ),
        401,
        "account_locked",
    )
    assert login(admin).post("/api/v1/users/carol/unlock").status_code == 200
    assert login(carol).get("/api/v1/me").status_code == 200


def test_success_resets_failure_count(make_user, anonymous, login) -> None:
    dave = make_user("dave", "qa")
    wrong = {"username": "dave", "password": "nope"}
    failing(lambda: anonymous.post("/api/v1/auth/tokens", json=wrong), 4)
    login(dave)
    failing(lambda: anonymous.post("/api/v1/auth/tokens", json=wrong), 4)
    login(dave)  # still not locked: the count restarted after the success


@pytest.mark.requirement("21 CFR 11.10(d)")
def test_token_expires(make_user, login, app) -> None:
    erin = make_user("erin", "operator")
    clock.freeze(utcnow())
    api = login(erin)
    assert api.get("/api/v1/me").status_code == 200
    ttl = app.config["GMP_SETTINGS"].token_ttl_minutes
    clock.advance(timedelta(minutes=ttl, seconds=1))
    assert_problem(api.get("/api/v1/me"), 401, "unauthenticated")


@pytest.mark.requirement("21 CFR 11.10(d)")
def test_issued_token_stops_working_when_the_account_is_deactivated(make_user, login) -> None:
    admin, gina = make_user("adm", "admin"), make_user("gina", "operator")
    gina_api = login(gina)
    assert gina_api.get("/api/v1/me").status_code == 200
    assert login(admin).post("/api/v1/users/gina/deactivate").status_code == 200
    assert_problem(gina_api.get("/api/v1/me"), 401, "unauthenticated")


@pytest.mark.requirement("21 CFR 11.300(d)")
def test_issued_token_stops_working_when_the_account_locks(make_user, login, anonymous) -> None:
    hugo = make_user("hugo", "qc")
    hugo_api = login(hugo)
    wrong = {"username": "hugo", "password": "nope"}
    failing(lambda: anonymous.post("/api/v1/auth/tokens", json=wrong), 5)
    assert_problem(hugo_api.get("/api/v1/me"), 401, "unauthenticated")


@pytest.mark.requirement("21 CFR 11.10(d)")
def test_page_session_ends_when_the_account_is_deactivated(app, make_user, login) -> None:
    from tests.test_pages_core import page_login

    admin, ivy = make_user("adm", "admin"), make_user("ivy", "operator")
    browser = app.test_client()
    page_login(browser, ivy)
    assert browser.get("/").status_code == 200
    assert login(admin).post("/api/v1/users/ivy/deactivate").status_code == 200
    response = browser.get("/", headers={"Accept": "text/html"})
    assert response.status_code == 302 and "/login" in response.headers["Location"]


@pytest.mark.requirement("21 CFR 11.100(a)")
def test_deactivated_user_cannot_log_in_and_name_is_never_reused(make_user, login, anonymous):
    admin = make_user("adm", "admin")
    frank = make_user("frank", "operator")
    api = login(admin)
    assert api.post("/api/v1/users/frank/deactivate").get_json()["active"] is False
    assert_problem(
        anonymous.post(
            "/api/v1/auth/tokens", json={"username": "frank", "password": frank.password}
        ),
        401,
        "account_inactive",
    )
    response = api.post(
        "/api/v1/users",
        json={
            "username": "frank",
            "full_name": "Another Frank",
            "password": "long-enough-pass",
            "roles": ["qc"],
            "site": "CLEAN1",
        },
    )
    assert_problem(response, 409, "already_exists")


@pytest.mark.requirement("21 CFR 11.10(g)")
@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/v1/users", {"admin"}),
        ("/api/v1/audit", {"qa", "admin"}),
        ("/api/v1/sites", {"operator", "qc", "qa", "clinician", "admin"}),
    ],
)
def test_role_checks_on_reads(make_user, login, path, allowed) -> None:
    for role in ("operator", "qc", "qa", "clinician", "admin"):
        api = login(make_user(None, role))
        response = api.get(path)
        if role in allowed:
            assert response.status_code == 200, (role, path)
        else:
            assert_problem(response, 403, "forbidden_role")


@pytest.mark.requirement("21 CFR 11.10(g)")
def test_only_admin_creates_users_and_sites(make_user, login) -> None:
    body = {"code": "HOSP9", "kind": "treatment", "name": "Hospital 9"}
    for role in ("operator", "qc", "qa", "clinician"):
        api = login(make_user(None, role))
        assert_problem(api.post("/api/v1/sites", json=body), 403, "forbidden_role")
    admin = login(make_user(None, "admin"))
    assert admin.post("/api/v1/sites", json=body).status_code == 201


def test_user_with_several_roles(make_user, login) -> None:
    small = make_user("solo", "operator", "qa")
    api = login(small)
    assert api.get("/api/v1/audit").status_code == 200
    assert api.get("/api/v1/me").get_json()["roles"] == ["operator", "qa"]


@pytest.mark.requirement("21 CFR 11.10(d)")
def test_roles_are_checked_before_the_body_is_parsed(anonymous, make_user, login) -> None:
    garbage = {"username": 3}
    assert_problem(anonymous.post("/api/v1/users", json=garbage), 401, "unauthenticated")
    operator = login(make_user(None, "operator"))
    assert_problem(operator.post("/api/v1/users", json=garbage), 403, "forbidden_role")


@pytest.mark.requirement("21 CFR 11.10(g)")
def test_every_api_route_declares_its_roles(app) -> None:
    """Authority checks are declared next to each route; only these are public."""
    public = {"/api/v1/auth/tokens", "/api/v1/auth/password", "/api/v1/openapi.json",
              "/api/v1/docs", "/api/v1/docs/assets/<path:filename>"}  # the contract, no data
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule in public:
            continue
        view = app.view_functions[rule.endpoint]
        assert getattr(view, "required_roles", None) is not None, f"{rule.rule} declares no roles"


def test_admin_cannot_deactivate_their_own_account(make_user, login) -> None:
    admin = make_user("selfie", "admin")
    assert_problem(login(admin).post("/api/v1/users/selfie/deactivate"), 409, "conflict")
