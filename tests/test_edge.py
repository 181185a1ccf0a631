"""The smaller holes of issue 14, each closed at the edge (gmp_mes.edge): a safe ``next``,
one JSON depth and integer limit, dates that overflow, control characters, a validated
request id, security headers, POST-only logout, Secure cookies behind TLS, private files,
problem+json in the OpenAPI document, no benchmark route in the application."""

from __future__ import annotations

import itertools
import json
import logging
import os
import stat
from pathlib import Path

import pytest
from marshmallow import ValidationError

from gmp_mes import create_app
from gmp_mes.edge import InputRefused, load_json, safe_next
from gmp_mes.settings import SettingsError, load_settings
from tests.helpers import assert_problem
from tests.test_pages_core import csrf_from, page_login


@pytest.mark.parametrize(
    "target",
    ["//evil.example", "/\t/evil.example", "/%09/evil.example".replace("%09", "\t"),
     "/\\evil.example", "\\\\evil.example", "https://evil.example/", "/ok\r\nSet-Cookie: x=1",
     "/ok\nx", "evil.example", "", None, "/ /evil", "/\x00", "javascript:alert(1)"],
)
def test_unsafe_next_targets_are_refused(target) -> None:
    assert safe_next(target) is None


@pytest.mark.parametrize("target", ["/", "/audit?entity_type=item", "/items/X1#labels"])
def test_paths_on_this_site_are_kept(target) -> None:
    assert safe_next(target) == target


def test_login_never_redirects_off_site(client, make_user) -> None:
    person = make_user("olive", "operator")
    for query in ("next=/%09/evil.example", "next=%2F%09%2Fevil.example",
                  "next=/ok%0d%0aSet-Cookie:%20x=1", "next=/%5Cevil.example"):
        token = csrf_from(client.get("/login").get_data(as_text=True))
        response = client.post(f"/login?{query}", data={
            "username": person.username, "password": person.password, "csrf_token": token})
        assert response.status_code in (302, 400), (query, response.status_code)
        if response.status_code == 302:
            assert response.headers["Location"] == "/"


# --- JSON bodies ------------------------------------------------------------------------


def test_deeply_nested_json_is_400(make_user, login) -> None:
    api = login(make_user("adm", "admin"))
    for depth, path in itertools.product((40, 1_000, 100_000), ("/api/v1/sites", "/api/v1/scans")):
        body = "[" * depth + "]" * depth
        response = api.client.post(path, data=body, content_type="application/json",
                                   headers={"Authorization": f"Bearer {api.token}"})
        assert_problem(response, 400, "malformed_body")


def test_numbers_beyond_64_bits_in_a_body_are_4xx(make_user, login) -> None:
    api = login(make_user("adm", "admin"))
    for number in ("1" + "0" * 5000, "1e400", "NaN", "Infinity"):
        response = api.client.post(
            "/api/v1/alerts/1/acknowledge", data=f'{{"note": {number}}}',
            content_type="application/json", headers={"Authorization": f"Bearer {api.token}"})
        assert_problem(response, 400, "malformed_body")
    operator = login(make_user("op", "operator"))
    for number in (2**63, -(2**63) - 1, 10**30):  # a field that takes an integer: 422 names it
        body = assert_problem(operator.post("/api/v1/batches", json={
            "item_id": "ITM-X", "process_code": "CART", "process_version": number}), 422)
        assert "process_version" in body["errors"]


def test_integer_fields_are_64_bit() -> None:
    from gmp_mes.alerts_api import AlertQuerySchema

    with pytest.raises(ValidationError) as caught:
        AlertQuerySchema().load({"offset": str(2**63)})
    assert "offset" in caught.value.messages
    assert AlertQuerySchema().load({"offset": str(2**63 - 1)})["offset"] == 2**63 - 1


def test_load_json_limits() -> None:
    assert load_json('{"a": [1, 2.5, "x\\ny"]}') == {"a": [1, 2.5, "x\ny"]}
    assert load_json(str(2**63 - 1)) == 2**63 - 1
    assert load_json('"a\\u0000b"') == "a\x00b"  # text is the schemas' (EdgeSchema)
    assert load_json(str(2**70)) == 2**70  # the range is the schemas'
    for bad in ("[" * 33 + "]" * 33, "1" * 41, "[1e999]", "-Infinity"):
        with pytest.raises(InputRefused):
            load_json(bad)


def test_out_of_range_query_arguments_are_4xx(make_user, login) -> None:
    api = login(make_user("qa", "qa", "admin"))
    queries = ("offset=9223372036854775808", "limit=99999999999999999999",
               "offset=-9223372036854775809", "since=9999-12-31T23:59:59-12:00",
               "since=0001-01-01T00:00:00%2B14:00", "entity_id=a%00b")
    for path, query in itertools.product(("/api/v1/audit", "/api/v1/alerts"), queries):
        response = api.get(f"{path}?{query}")
        assert 400 <= response.status_code < 500, (path, query, response.status_code)
        assert response.content_type == "application/problem+json"


def test_ids_beyond_64_bits_in_a_path_are_404(make_user, login) -> None:
    api = login(make_user("adm", "admin"))
    for ident in ("9223372036854775808", "1" + "0" * 30):
        assert_problem(api.post(f"/api/v1/alerts/{ident}/acknowledge"), 404)


def test_dates_that_overflow_are_422(make_user, login) -> None:
    api = login(make_user("cli", "clinician", site="HOSP1"))
    for moment in ("9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00",
                   "3000-01-01T00:00:00+00:00", "1899-12-31T00:00:00+00:00"):
        response = api.post("/api/v1/collections", json={
            "coi_id": "X", "collected_at": moment, "site": "HOSP1", "volume_ml": 100})
        body = assert_problem(response, 422, "validation_error")
        assert "collected_at" in body["errors"]


# --- text -------------------------------------------------------------------------------


def test_control_characters_in_json_text_are_422_naming_the_field(make_user, login) -> None:
    api = login(make_user("op", "operator"))
    for text in ("a\x00b", "\x1b[2J", "x\x7f", "\x85", "\x0b"):
        body = assert_problem(api.post("/api/v1/alerts/1/acknowledge", json={"note": text}), 422)
        assert "note" in body["errors"]
        body = assert_problem(api.post("/api/v1/scans", json={"payload": "x",
                                                              "workstation": text}), 422)
        assert "workstation" in body["errors"]
        # A scanned payload is what the scanner read: refused as malformed, and recorded.
        scan = api.post("/api/v1/scans", json={"payload": text, "workstation": "w"})
        assert scan.status_code == 200 and scan.get_json()["ok"] is False


def test_every_input_schema_refuses_control_characters() -> None:
    from batches.schemas import DeviationInSchema
    from gmp_mes.alerts_api import AcknowledgeSchema
    from gmp_mes.schemas import Text, TokenRequestSchema

    with pytest.raises(ValidationError) as caught:
        DeviationInSchema().load({"severity": "minor", "description": "spill\x00"})
    assert "description" in caught.value.messages
    DeviationInSchema().load({"severity": "minor", "description": "line 1\nline 2\ttab"})
    with pytest.raises(ValidationError):
        AcknowledgeSchema().load({"note": "ok\x00"})
    with pytest.raises(ValidationError):
        TokenRequestSchema().load({"username": "a\x00", "password": "x"})
    with pytest.raises(ValidationError):
        Text().deserialize("one\ntwo")
    assert Text(multiline=True).deserialize("one\ntwo") == "one\ntwo"


def test_nul_in_a_page_form_is_4xx_not_500(client, make_user) -> None:
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": "a\x00b", "password": "x",
                                           "csrf_token": token})
    assert 400 <= response.status_code < 500


# --- request id and headers ---------------------------------------------------------------


def test_request_id_is_kept_only_when_it_is_a_plain_token(client, caplog) -> None:
    assert client.get("/healthz", headers={"X-Request-Id": "abc-123.x"}).headers[
        "X-Request-Id"] == "abc-123.x"
    for raw in ("abc\nFAKE ERROR admin logged in", "x" * 65, "<script>", "a b"):
        response = client.get("/healthz", headers={"X-Request-Id": raw.replace("\n", "%0a")})
        assert response.headers["X-Request-Id"] != raw
        assert len(response.headers["X-Request-Id"]) == 16


def test_request_id_never_reaches_the_log_raw(app, client, caplog) -> None:
    @app.route("/api/boom-for-test")
    def boom() -> str:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR):
        response = client.get("/api/boom-for-test", headers={"X-Request-Id": "x\u2028FORGED"})
    assert response.status_code == 500
    assert "FORGED" not in caplog.text
    assert response.get_json()["request_id"] in caplog.text


def test_pages_carry_csp_with_a_nonce_and_no_store(client, make_user) -> None:
    page_login(client, make_user("op", "operator"))
    response = client.get("/scan", headers={"Accept": "text/html"})
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self' 'nonce-" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    nonce = csp.split("'nonce-")[1].split("'")[0]
    html = response.get_data(as_text=True)
    assert f'<script nonce="{nonce}">' in html
    assert "<script>" not in html and "onchange=" not in html and "onclick=" not in html
    assert response.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP
    again = client.get("/scan", headers={"Accept": "text/html"})
    assert again.headers["Content-Security-Policy"] != csp  # a fresh nonce each response


def test_hsts_and_secure_cookie_behind_a_tls_proxy(app_config, make_user) -> None:
    app = create_app({**app_config, "session_cookie_secure": True, "trusted_proxies": 1})
    try:
        client = app.test_client()
        response = client.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        cookie = response.headers.get("Set-Cookie", "")
        token = csrf_from(response.get_data(as_text=True))
        assert "Secure" in cookie and "HttpOnly" in cookie
        assert token
        plain = client.get("/login")
        assert "Strict-Transport-Security" not in plain.headers
    finally:
        app.extensions["gmp_mes.db"].dispose()


def test_forwarded_headers_are_ignored_without_trusted_proxies(client) -> None:
    response = client.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in response.headers


def test_logout_by_get_is_gone(client, make_user) -> None:
    """A GET (a link, an image, another site) never logs out: it only shows the button,
    a form that POSTs with the CSRF token."""
    page_login(client, make_user("op", "operator"))
    page = client.get("/logout")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'method="post"' in html.lower() and 'name="csrf_token"' in html
    assert client.get("/", headers={"Accept": "text/html"}).status_code == 200  # still in
    assert client.post("/logout").status_code == 403  # no CSRF token: refused, still in
    assert client.get("/", headers={"Accept": "text/html"}).status_code == 200


# --- settings, files, server, documents -----------------------------------------------------


def test_timeout_and_proxy_settings_are_validated(tmp_path) -> None:
    settings = load_settings({"instance_path": str(tmp_path), "secret_key": "x",
                              "db_statement_timeout": "0", "session_cookie_secure": "true"})
    assert settings.db_statement_timeout == 0 and settings.session_cookie_secure is True
    with pytest.raises(SettingsError, match="GMP_MES_DB_LOCK_TIMEOUT"):
        load_settings({"instance_path": str(tmp_path), "db_lock_timeout": "-1"})
    with pytest.raises(SettingsError, match="GMP_MES_SESSION_COOKIE_SECURE"):
        load_settings({"instance_path": str(tmp_path), "session_cookie_secure": "maybe"})


def test_sqlite_file_and_instance_files_are_private(tmp_path) -> None:
    instance = tmp_path / "instance"
    app = create_app({"instance_path": str(instance)})
    try:
        with app.extensions["gmp_mes.db"].engine.connect() as c:
            c.exec_driver_sql("CREATE TABLE t (x)")
        for name in ("gmp_mes.sqlite", "secret_key"):
            assert stat.S_IMODE(os.stat(instance / name).st_mode) == 0o600, name
        assert stat.S_IMODE(os.stat(instance).st_mode) == 0o700
        for extra in instance.glob("gmp_mes.sqlite-*"):
            assert stat.S_IMODE(os.stat(extra).st_mode) & 0o077 == 0, extra
    finally:
        app.extensions["gmp_mes.db"].dispose()


def test_openapi_documents_errors_as_problem_json(client) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    responses = spec["components"]["responses"]
    for name in ("DEFAULT_ERROR", "UNPROCESSABLE_ENTITY"):
        assert list(responses[name]["content"]) == ["application/problem+json"]
    assert "application/json" not in json.dumps(responses)


def test_no_benchmark_route_ships_in_the_application(app) -> None:
    assert not any("bench" in rule.rule for rule in app.url_map.iter_rules())
    root = Path(__file__).resolve().parent.parent
    assert not (root / "identity" / "bench_reference.py").exists()
    assert (root / "bench" / "reference_route.py").exists()


def test_an_edge_refusal_says_it_once_however_many_schemas_were_built() -> None:
    """Regression: the edge's check was inserted into a field's validator list shared by
    every schema instance (marshmallow copies declared fields shallowly), so each new
    instance added the same message again to a 422."""
    from marshmallow import ValidationError as SchemaError
    from marshmallow import fields as mfields

    from gmp_mes.schemas import StrictSchema

    class Probe(StrictSchema):
        count = mfields.Integer(strict=True)
        names = mfields.List(mfields.String())

    for _ in range(3):
        with pytest.raises(SchemaError) as refused:
            Probe().load({"count": 2**70, "names": ["a\x00b"]})
    assert refused.value.messages["count"] == [
        "number out of range (a signed 64-bit integer at most)"]
    assert len(refused.value.messages["names"][0]) == 1
