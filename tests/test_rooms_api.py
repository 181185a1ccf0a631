"""The rooms API and pages (SPEC §12, §7, §7b): register (admin), read (any role), line
clearance and its verification by a second person, EM results with their outcome, alert
limits; bad input 422 with its field; refused page forms keep what was typed; PRG."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from gmp_mes.clock import clock
from tests.conftest import sig
from tests.helpers import assert_problem, count
from tests.test_batches_fixtures import plant_fixture  # noqa: F401
from tests.test_pages_core import page_login
from tests.test_rooms_fixtures import Ward, ward_fixture  # noqa: F401

pytestmark = pytest.mark.requirement("SPEC §7")


def _room(api, code: str = "CR-B1", grade: str = "B") -> dict:
    made = api.post("/api/v1/rooms", json={"code": code, "site": "CLEAN1", "grade": grade,
                                           "name": f"Room {code}"})
    assert made.status_code == 201, made.get_json()
    return made.get_json()


def test_register_read_and_who_may(ward: Ward, login) -> None:
    admin, operator = login(ward.admin), login(ward.plant.operator)
    assert_problem(operator.post("/api/v1/rooms", json={
        "code": "X", "site": "CLEAN1", "grade": "B", "name": "x"}), 403)
    made = _room(admin, "cr-b1")
    assert (made["code"], made["grade"], made["last_coi"], made["cleared"]) == (
        "CR-B1", "B", None, True)
    assert_problem(admin.post("/api/v1/rooms", json={
        "code": "CR-B1", "site": "CLEAN1", "grade": "B", "name": "again"}), 409,
        "already_exists")
    got = login(ward.qc).get("/api/v1/rooms/CR-B1").get_json()
    assert got["uses"] == [] and got["clearances"] == [] and got["em_results"] == []
    assert [r["code"] for r in operator.get("/api/v1/rooms").get_json()] == ["CR-B1"]
    assert_problem(operator.get("/api/v1/rooms/NOPE"), 404)


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v1/rooms", {"code": "R", "site": "CLEAN1", "grade": "E", "name": "r"}, "grade"),
    ("/api/v1/rooms", {"code": "R", "site": "CLEAN1", "grade": "A"}, "name"),
    ("/api/v1/rooms", {"code": "R R", "site": "CLEAN1", "grade": "A", "name": "r"}, "code"),
    ("/api/v1/rooms", {"code": "R", "site": "NOWHERE", "grade": "A", "name": "r"}, "site"),
    ("/api/v1/em-alert-limits", {"site": "CLEAN1", "grade": "B", "sample_type": "air_active",
                                 "alert_limit": 0}, "alert_limit"),
])
def test_bad_admin_input_is_422_with_its_field(ward: Ward, login, path, body, field) -> None:
    problem = assert_problem(login(ward.admin).post(path, json=body), 422)
    assert field in problem["errors"], problem


@pytest.mark.parametrize(("change", "field"), [
    ({"value": -1}, "value"), ({"value": 1.5}, "value"), ({"value": "3"}, "value"),
    ({"sample_type": "swab"}, "sample_type"), ({"sampled_at": "2026-01-01T10:00:00"},
                                               "sampled_at"),
    ({"sampled_at": "2999-01-01T10:00:00Z"}, "sampled_at"), ({"extra": 1}, "extra"),
])
def test_bad_em_input_is_422_with_its_field(ward: Ward, login, change, field) -> None:
    _room(login(ward.admin))
    body = {"sample_type": "air_active", "value": 1,
            "sampled_at": clock.now().isoformat(), "signature": sig(), **change}
    problem = assert_problem(login(ward.qc).post("/api/v1/rooms/CR-B1/em-results", json=body),
                             422)
    assert field in problem["errors"], problem
    assert count(ward.plant.db, "em_result") == 0


@pytest.mark.requirement("EU GMP Part IV 9.4")
def test_clearance_and_verification_by_a_second_person(ward: Ward, login) -> None:
    _room(login(ward.admin))
    olga, oscar = login(ward.plant.operator), login(ward.plant.operator2)
    performed = olga.post("/api/v1/rooms/CR-B1/clearances", json={"signature": sig()})
    assert performed.status_code == 201, performed.get_json()
    clearance = performed.get_json()
    assert (clearance["status"], clearance["performed_by"]) == ("performed", "olga")
    path = f"/api/v1/rooms/CR-B1/clearances/{clearance['id']}/verify"
    assert_problem(olga.post(path, json={"signature": sig("verified")}), 403,
                   "segregation_of_duties")
    assert_problem(oscar.post(path, json={"signature": sig("performed")}), 422)
    verified = oscar.post(path, json={"signature": sig("verified")})
    assert verified.status_code == 200, verified.get_json()
    assert (verified.get_json()["status"], verified.get_json()["verified_by"]) == (
        "verified", "oscar")
    assert_problem(oscar.post(path, json={"signature": sig("verified")}), 409,
                   "invalid_transition")
    assert_problem(login(ward.qc).post("/api/v1/rooms/CR-B1/clearances",
                                       json={"signature": sig()}), 403)


@pytest.mark.requirement("EU GMP Annex 1 §9")
def test_an_em_failure_through_the_api(ward: Ward, login, client) -> None:
    _room(login(ward.admin))
    number = ward.plant.start()
    ward.enter(number, "CR-B1")
    clock.advance(timedelta(hours=1))
    answer = login(ward.plant.operator).post("/api/v1/rooms/CR-B1/em-results", json={
        "sample_type": "settle_plate", "value": 6, "location": "BSC-01 left",
        "sampled_at": (clock.now() - timedelta(minutes=30)).isoformat(), "signature": sig()})
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert (body["passed"], body["action_limit"], body["unit"]) == (False, 5, "cfu/4 h")
    assert len(body["deviations"]) == 1 and body["signature"]["meaning"] == "performed"
    record = login(ward.plant.qa).get(f"/api/v1/batches/{number}/record.json").get_json()
    assert [(e["em_result_id"], e["deviation"]) for e in record["em_excursions"]] == [
        (body["id"], body["deviations"][0])]
    page_login(client, ward.plant.qa)
    page = client.get(f"/batches/{number}").get_data(as_text=True)
    assert "Environmental monitoring excursions" in page and body["deviations"][0] in page
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(login(ward.plant.qa).get(
        f"/api/v1/batches/{number}/record.pdf").data)
    try:
        text = "\n".join(p.get_textpage().get_text_range() for p in document)
    finally:
        document.close()
    assert "Environmental monitoring excursions" in text and "Rooms used" in text
    assert body["deviations"][0] in text
    detail = login(ward.qc).get("/api/v1/rooms/CR-B1?sample_type=settle_plate").get_json()
    assert [r["id"] for r in detail["em_results"]] == [body["id"]]
    assert_problem(login(ward.plant.qa).post("/api/v1/rooms/CR-B1/em-results", json={
        "sample_type": "settle_plate", "value": 0, "sampled_at": clock.now().isoformat(),
        "signature": sig()}), 403)


def test_alert_limits_through_the_api(ward: Ward, login) -> None:
    admin = login(ward.admin)
    made = admin.post("/api/v1/em-alert-limits", json={
        "site": "CLEAN1", "grade": "C", "sample_type": "contact_plate", "alert_limit": 15})
    assert made.status_code == 201, made.get_json()
    assert_problem(admin.post("/api/v1/em-alert-limits", json={
        "site": "CLEAN1", "grade": "C", "sample_type": "contact_plate", "alert_limit": 26}),
        422)
    got = login(ward.qc).get("/api/v1/em-alert-limits?site=CLEAN1").get_json()
    assert [(r["grade"], r["sample_type"], r["alert_limit"]) for r in got] == [
        ("C", "contact_plate", 15)]


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def _post(client, page: str, path: str, data: dict):
    token = _csrf(client.get(page).get_data(as_text=True))
    return client.post(path, data={**data, "csrf_token": token},
                       headers={"Accept": "text/html"})


def test_pages_register_clear_verify_and_enter_results(ward: Ward, client) -> None:
    page_login(client, ward.admin)
    refused = _post(client, "/rooms", "/rooms", {"code": "CR-B1", "site": "CLEAN1",
                                                 "grade": "B", "name": ""})
    assert refused.status_code == 422
    assert 'value="CR-B1"' in refused.get_data(as_text=True)
    made = _post(client, "/rooms", "/rooms", {"code": "CR-B1", "site": "CLEAN1",
                                              "grade": "B", "name": "Fill suite"})
    assert made.status_code == 302 and made.headers["Location"].endswith("/rooms/CR-B1")
    limit = _post(client, "/rooms", "/rooms/alert-limits", {
        "site": "CLEAN1", "grade": "B", "sample_type": "air_active", "alert_limit": "7"})
    assert limit.status_code == 302
    page_login(client, ward.plant.operator)
    cleared = _post(client, "/rooms/CR-B1", "/rooms/CR-B1/clearances",
                    {"password": "correct-horse-battery"})
    assert cleared.status_code == 302
    page = client.get("/rooms/CR-B1").get_data(as_text=True)
    assert "Verify" in page and "Fill suite" in page
    dashboard = client.get("/").get_data(as_text=True)
    assert "Rooms at CLEAN1 needing attention" in dashboard
    assert "waiting for a second person" in dashboard
    wrong = _post(client, "/rooms/CR-B1", "/rooms/CR-B1/em-results", {
        "sample_type": "air_active", "value": "8", "sampled_at": "2026-01-01T09:30",
        "location": "door", "password": "wrong"})
    html = wrong.get_data(as_text=True)
    assert wrong.status_code == 401 and 'value="door"' in html and 'value="8"' in html
    assert "wrong" not in re.findall(r'name="password"[^>]*', html)[0]
    typo = _post(client, "/rooms/CR-B1", "/rooms/CR-B1/em-results", {
        "sample_type": "air_active", "value": "eight", "sampled_at": "2026-01-01T09:30",
        "password": "correct-horse-battery"})
    assert typo.status_code == 422 and 'value="eight"' in typo.get_data(as_text=True)
    sampled = (clock.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    entered = _post(client, "/rooms/CR-B1", "/rooms/CR-B1/em-results", {
        "sample_type": "air_active", "value": "8", "sampled_at": sampled,
        "password": "correct-horse-battery"})
    assert entered.status_code == 302
    assert entered.headers["Location"].endswith("/rooms/CR-B1/em/air_active")
    trend = client.get("/rooms/CR-B1/em/air_active").get_data(as_text=True)
    assert "alert level" in trend and 'src="data:image/svg+xml;base64,' in trend
    assert "action limit 10" in trend or "10 cfu/m³" in trend
    page_login(client, ward.plant.operator2)
    page = client.get("/rooms/CR-B1").get_data(as_text=True)
    action = re.search(r'action="(/rooms/CR-B1/clearances/\d+/verify)"', page)
    assert action
    verified = _post(client, "/rooms/CR-B1", action.group(1),
                     {"password": "correct-horse-battery"})
    assert verified.status_code == 302
    page = client.get("/rooms/CR-B1").get_data(as_text=True)
    assert "/verify" not in page and "Oscar" in page
    # The latest air result passed: nothing needs attention now.
    assert "Rooms at CLEAN1" not in client.get("/").get_data(as_text=True)


def test_the_header_search_opens_a_room(ward: Ward, login, client) -> None:
    _room(login(ward.admin))
    page_login(client, ward.qc)
    response = client.get("/search?q=cr-b1")
    assert response.status_code == 302 and response.headers["Location"].endswith("/rooms/CR-B1")
    assert client.get("/search?q=CR-XX").status_code == 404
