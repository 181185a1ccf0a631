"""RFC 9457 problem+json for every error (SPEC §7); never a 500 for bad input."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import assert_problem


def test_400_malformed_json(make_user, login) -> None:
    api = login(make_user("adm", "admin"))
    response = api.client.post(
        "/api/v1/sites",
        data="{not json",
        content_type="application/json",
        headers={"Authorization": f"Bearer {api.token}"},
    )
    assert_problem(response, 400, "malformed_body")


def test_401_problem(anonymous) -> None:
    body = assert_problem(anonymous.get("/api/v1/users"), 401, "unauthenticated")
    assert "detail" in body


def test_403_problem(make_user, login) -> None:
    assert_problem(login(make_user("op", "operator")).get("/api/v1/users"), 403, "forbidden_role")


def test_404_problem_for_unknown_route(anonymous) -> None:
    assert_problem(anonymous.get("/api/v1/no-such-thing"), 404, "not_found")


def test_404_problem_from_a_service(make_user, login) -> None:
    api = login(make_user("adm", "admin"))
    assert_problem(api.post("/api/v1/users/nobody/unlock"), 404, "not_found")


def test_405_problem_keeps_allow_header(anonymous) -> None:
    response = anonymous.client.delete("/api/v1/auth/tokens")
    assert_problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_409_problem(make_user, login) -> None:
    api = login(make_user("adm", "admin"))
    body = {"code": "LAB7", "kind": "manufacturing", "name": "Lab 7"}
    assert api.post("/api/v1/sites", json=body).status_code == 201
    assert_problem(api.post("/api/v1/sites", json=body), 409, "already_exists")


def test_422_problem_with_field_errors(make_user, login) -> None:
    api = login(make_user("adm", "admin"))
    response = api.post(
        "/api/v1/users",
        json={
            "username": "x",
            "full_name": "X",
            "password": "short",
            "roles": ["wizard"],
            "site": "CLEAN1",
            "colour": "blue",
        },
    )
    body = assert_problem(response, 422, "validation_error")
    assert "roles.0" in body["errors"] or "roles" in body["errors"]
    assert "colour" in body["errors"]


def test_422_service_validation_names_the_field(make_user, login) -> None:
    api = login(make_user("adm", "admin"))
    response = api.post(
        "/api/v1/users",
        json={
            "username": "newbie",
            "full_name": "New",
            "password": "short",
            "roles": ["qc"],
            "site": "CLEAN1",
        },
    )
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"]["password"]


def test_500_is_a_problem_with_request_id(app, anonymous) -> None:
    @app.route("/api/v1/boom")
    def boom() -> str:
        raise ZeroDivisionError("bug")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    body = assert_problem(anonymous.get("/api/v1/boom"), 500, "internal_error")
    assert body["request_id"]
    assert "ZeroDivisionError" not in body["detail"]


def test_healthz_reports_database(anonymous) -> None:
    response = anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "reachable"}


def test_openapi_document_is_public_and_lists_routes(anonymous) -> None:
    response = anonymous.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/auth/tokens" in doc["paths"]
    assert "bearer" in doc["components"]["securitySchemes"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "username",
        "password",
        "full_name",
        "roles",
        "site",
        "code",
        "kind",
        "name",
        "timezone",
        "signature",
        "values",
        "payload",
        "item_id",
        "coi_id",
        "reason",
        "test",
        "value",
        "outcome",
    ]
)
bodies = st.one_of(
    json_values,
    st.dictionaries(field_names, json_values, max_size=6),
)
path_parts = st.text(
    alphabet=string.ascii_letters + string.digits + "-_.%", min_size=1, max_size=20
)


def post_routes(app) -> list[str]:
    return sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if "POST" in (rule.methods or set()) and rule.rule.startswith("/api/v1/")
    )


@pytest.mark.slow
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_json_at_every_post_route_never_5xx(app, make_user, login, data) -> None:
    if not hasattr(app, "_fuzz_clients"):
        people = [make_user(f"fz{r}", r) for r in ("admin", "operator", "qa", "qc", "clinician")]
        app._fuzz_clients = [login(p) for p in people]
    routes = post_routes(app)
    rule = data.draw(st.sampled_from(routes), label="route")
    path = rule
    while "<" in path:
        start, end = path.index("<"), path.index(">")
        path = path[:start] + data.draw(path_parts, label="path part") + path[end + 1 :]
    api = data.draw(st.sampled_from(app._fuzz_clients), label="client")
    if data.draw(st.booleans(), label="raw bytes"):
        raw = data.draw(st.binary(max_size=200), label="raw")
        response = api.client.post(
            path,
            data=raw,
            content_type="application/json",
            headers={"Authorization": f"Bearer {api.token}"},
        )
    else:
        response = api.post(path, json=data.draw(bodies, label="body"))
    assert response.status_code < 500, (rule, response.get_data(as_text=True)[:500])
    if response.status_code >= 400:
        assert response.content_type.startswith("application/problem+json")
