"""The qc HTTP API (SPEC §7: qc-results, release, reject, release queue) and pages (§7b)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.conftest import ApiClient, sig
from tests.helpers import assert_problem, count
from tests.test_pages_core import csrf_from, page_login
from tests.test_qc_fixtures import (  # noqa: F401 - fixtures
    Lab,
    failing,
    lab_fixture,
    passing,
    plant_fixture,
)


def qc_body(lab: Lab, number: str, test: str, **extra: Any) -> dict[str, Any]:
    return {"test": test, **passing(lab.spec(number, test)), "signature": sig(), **extra}


def test_qc_result_api_computes_pass_and_refuses_bad_input(lab: Lab, login, db) -> None:
    number = lab.made()
    api = login(lab.analyst)
    path = f"/api/v1/batches/{number}/qc-results"
    response = api.post(path, json={"test": "endotoxin", "value": 7.5, "signature": sig()})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["passed"] is False and body["unit"] == "EU/mL"
    assert body["signature"]["meaning"] == "performed" and body["specification"] == "<= 5 EU/mL"
    # The pass/fail verdict is never entered.
    assert_problem(api.post(path, json={**qc_body(lab, number, "dose"), "passed": True}),
                   422, "validation_error")
    problem = assert_problem(api.post(path, json={"test": "sterilty", "outcome": "negative",
                                                  "signature": sig()}), 422)
    assert "test" in problem["errors"] and "sterility" in problem["errors"]["test"][0]
    problem = assert_problem(api.post(path, json={**qc_body(lab, number, "dose"),
                                                  "unit": "cells"}), 422)
    assert list(problem["errors"]) == ["unit"]
    problem = assert_problem(api.post(path, json={"test": "sterility", "value": 0,
                                                  "signature": sig()}), 422)
    assert "value" in problem["errors"]
    assert_problem(api.post(path, json={"test": "dose", "value": "many", "signature": sig()}),
                   422)
    assert_problem(api.post(path, json=qc_body(lab, number, "dose") | {
        "signature": sig(password="wrong")}), 401, "signature_rejected")
    assert_problem(login(lab.qa).post(path, json=qc_body(lab, number, "dose")), 403,
                   "forbidden_role")
    assert_problem(api.post("/api/v1/batches/NOPE-1/qc-results",
                            json=qc_body(lab, number, "dose")), 404)
    assert count(db, "qc_result") == 1
    overview = api.get(f"/api/v1/batches/{number}/qc").get_json()
    rows = {t["test"]: t for t in overview["tests"]}
    assert rows["endotoxin"]["status"] == "failed" and rows["dose"]["status"] == "pending"
    assert rows["endotoxin"]["results"][0]["signature"]["manifestation"]


def test_qc_result_correction_review_and_invalidation_api(lab: Lab, login) -> None:
    number = lab.made()
    api, reviewer = login(lab.analyst), login(lab.analyst2)
    base = f"/api/v1/batches/{number}/qc-results"
    first = api.post(base, json={"test": "viability", "value": 75.0, "signature": sig()})
    first_id = first.get_json()["id"]
    assert_problem(api.post(base, json=qc_body(lab, number, "viability")), 409,
                   "qc_result_exists")
    assert_problem(api.post(base, json={**qc_body(lab, number, "viability"),
                                        "corrects": first_id}), 422)
    second = api.post(base, json={**qc_body(lab, number, "viability"), "corrects": first_id,
                                  "reason": "wrong gate applied"})
    assert second.status_code == 201 and second.get_json()["version"] == 2
    second_id = second.get_json()["id"]
    assert_problem(api.post(f"{base}/{second_id}/review", json={"signature": sig("reviewed")}),
                   403, "segregation_of_duties")
    reviewed = reviewer.post(f"{base}/{second_id}/review", json={"signature": sig("reviewed")})
    assert reviewed.status_code == 201
    assert reviewed.get_json()["review_signature"]["username"] == lab.analyst2.username
    invalid = reviewer.post(f"{base}/{second_id}/invalidate", json={
        "reason": "flow cytometer QC beads out of range", "signature": sig()})
    assert invalid.status_code == 201 and invalid.get_json()["invalid"] is True
    rows = {t["test"]: t for t in api.get(f"/api/v1/batches/{number}/qc").get_json()["tests"]}
    assert rows["viability"]["status"] == "pending" and rows["viability"]["invalid"] == 1
    assert_problem(api.post(f"/api/v1/batches/OTHER-1/qc-results/{first_id}/review",
                            json={"signature": sig("reviewed")}), 404)
    assert_problem(reviewer.post(f"{base}/{2**70}/review", json={"signature": sig("reviewed")}),
                   404)
    problem = assert_problem(api.post(base, json={**qc_body(lab, number, "viability"),
                                                  "corrects": 99999, "reason": "x"}), 422)
    assert "corrects" in problem["errors"]
    assert_problem(api.post(base, json={**qc_body(lab, number, "viability"),
                                        "corrects": 2**70, "reason": "x"}), 422)


def _release(api: ApiClient, number: str, **body: Any) -> Any:
    return api.post(f"/api/v1/batches/{number}/release",
                    json={"signature": sig("released"), **body})


@pytest.mark.requirement("SPEC §5")
def test_release_api_names_every_unmet_condition(lab: Lab, login, db) -> None:
    number = lab.ready(skip=("sterility", "dose"))
    lab.result(number, "dose", fields=failing(lab.spec(number, "dose")))
    qa = login(lab.qa)
    problem = assert_problem(_release(qa, number), 409, "qc_incomplete")
    assert [p["code"] for p in problem["problems"]] == ["qc_incomplete", "qc_failed"]
    assert all(p["message"] for p in problem["problems"])
    queue = qa.get("/api/v1/qa/release-queue").get_json()
    entry = next(e for e in queue if e["batch_number"] == number)
    assert [p["code"] for p in entry["problems"]] == ["qc_incomplete", "qc_failed"]
    assert entry["releasable"] is False and entry["conditional_release_possible"] is False
    assert_problem(login(lab.analyst).get("/api/v1/qa/release-queue"), 403, "forbidden_role")
    assert_problem(_release(login(lab.analyst), number), 403, "forbidden_role")
    assert_problem(_release(qa, number, signature=sig("released", "wrong")), 409)
    assert_problem(_release(qa, number, conditional={}), 422)
    assert_problem(_release(qa, "NO-SUCH"), 404)
    assert lab.status(number) == "awaiting_release" and count(db, "release_decision") == 0


def test_release_api_signature_and_segregation(lab: Lab, login, make_user, db) -> None:
    both = make_user("sam", "qc", "qa")
    number = lab.ready(skip=("endotoxin",))
    lab.result(number, "endotoxin", person=both)
    assert_problem(_release(login(both), number), 403, "segregation_of_duties")
    qa = login(lab.qa)
    problem = assert_problem(_release(qa, number, signature=sig("released", "wrong")), 401,
                             "signature_rejected")
    assert "signature.password" in problem["errors"]
    assert_problem(_release(qa, number, signature=sig("approved")), 422)
    assert lab.status(number) == "awaiting_release" and count(db, "release_decision") == 0
    released = _release(qa, number)
    assert released.status_code == 201, released.get_json()
    body = released.get_json()
    assert body["kind"] == "release" and body["conditional"] is False
    assert body["batch_status"] == "released"
    assert set(body["item_statuses"].values()) == {"released"}
    assert body["signature"]["meaning"] == "released"
    record = qa.get(f"/api/v1/batches/{number}").get_json()
    assert record["status"] == "released" and record["release"]["conditional"] is False
    assert_problem(_release(qa, number), 409, "invalid_transition")


def test_conditional_release_and_late_positive_via_api(lab: Lab, login) -> None:
    number = lab.ready(skip=("sterility",), bags=2)
    qa = login(lab.qa)
    queue = {e["batch_number"]: e for e in qa.get("/api/v1/qa/release-queue").get_json()}
    assert queue[number]["conditional_release_possible"] is True
    response = _release(qa, number, conditional={"justification": "rapidly progressing ALL"})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["conditional"] is True and body["pending_tests"] == ["sterility"]
    assert body["batch_status"] == "conditionally_released"
    assert set(body["item_statuses"].values()) == {"conditionally_released"}
    item_id = next(iter(body["item_statuses"]))
    item = qa.get(f"/api/v1/items/{item_id}").get_json()
    assert item["status"] == "conditionally_released"
    record = qa.get(f"/api/v1/batches/{number}").get_json()
    assert record["release"]["conditional"] is True
    queue = {e["batch_number"]: e for e in qa.get("/api/v1/qa/release-queue").get_json()}
    assert queue[number]["conditional"] is True
    assert [p["code"] for p in queue[number]["problems"]] == ["qc_pending"]
    late = login(lab.analyst).post(f"/api/v1/batches/{number}/qc-results", json={
        "test": "sterility", "outcome": "positive", "signature": sig()})
    assert late.status_code == 201 and late.get_json()["passed"] is False
    assert set(lab.items(number).values()) == {"blocked"}
    alerts = qa.get("/api/v1/alerts?status=open").get_json()
    critical = [a for a in alerts if a["kind"] == "qc_positive_after_release"]
    assert len(critical) == 1 and critical[0]["severity"] == "critical"


def test_reject_api_then_release_refused(lab: Lab, login) -> None:
    number = lab.ready()
    qa = login(lab.qa)
    path = f"/api/v1/batches/{number}/reject"
    assert_problem(qa.post(path, json={"signature": sig("rejected")}), 422)
    assert_problem(qa.post(path, json={"signature": sig("released"), "reason": "x"}), 422)
    rejected = qa.post(path, json={"signature": sig("rejected"), "reason": "CAR+ trend low"})
    assert rejected.status_code == 201, rejected.get_json()
    assert rejected.get_json()["batch_status"] == "rejected"
    assert set(rejected.get_json()["item_statuses"].values()) == {"rejected"}
    assert_problem(_release(qa, number), 409, "invalid_transition")
    assert_problem(qa.post(path, json={"signature": sig("rejected"), "reason": "again"}), 409)


@pytest.mark.requirement("SPEC §5 (one transaction that locks the batch)")
def test_twenty_concurrent_api_releases_by_two_qa_users(lab: Lab, app, login, db) -> None:
    number = lab.ready(bags=2)
    tokens = [login(lab.qa).token, login(lab.qa2).token]
    barrier = threading.Barrier(20)
    statuses: list[Any] = [None] * 20

    def attempt(n: int) -> None:
        api = ApiClient(app.test_client(), tokens[n % 2])  # each thread its own client
        barrier.wait()
        response = _release(api, number)
        statuses[n] = (response.status_code, (response.get_json() or {}).get("code"))

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [s[0] for s in statuses].count(201) == 1, statuses
    assert statuses.count((409, "invalid_transition")) == 19, statuses
    assert count(db, "release_decision") == 1
    assert set(lab.items(number).values()) == {"released"}


def test_release_queue_page_and_release_form(lab: Lab, client) -> None:
    ready, waiting = lab.ready(), lab.ready(skip=("sterility",))
    page_login(client, lab.qa)
    page = client.get("/qa/release", headers={"Accept": "text/html"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert ready in html and waiting in html and "qc incomplete" in html  # words, not codes
    assert "Conditional release" in html and "justification" in html
    token = csrf_from(html)
    wrong = client.post(f"/qa/release/{ready}", data={
        "csrf_token": token, "action": "release", "password": "wrong"})
    # Issue 15: the queue comes back at once, the form's text kept, saying whose
    # signature failed (no redirect that would lose what was typed).
    assert wrong.status_code == 401
    assert "Your signature failed" in wrong.get_data(as_text=True)
    assert lab.status(ready) == "awaiting_release"
    kept = client.post(f"/qa/release/{waiting}", data={
        "csrf_token": token, "action": "conditional", "password": "wrong",
        "justification": "patient relapsing, sterility pending"})
    assert kept.status_code == 401
    assert "patient relapsing, sterility pending</textarea>" in kept.get_data(as_text=True)
    done = client.post(f"/qa/release/{ready}", data={
        "csrf_token": token, "action": "release", "password": lab.qa.password})
    assert done.status_code == 302 and lab.status(ready) == "released"
    client.post(f"/qa/release/{waiting}", data={
        "csrf_token": token, "action": "conditional", "password": lab.qa.password,
        "justification": "clinical urgency"})
    assert lab.status(waiting) == "conditionally_released"
    html = client.get(f"/batches/{waiting}").get_data(as_text=True)
    assert "CONDITIONALLY RELEASED" in html
    dashboard = client.get("/").get_data(as_text=True)
    assert "Batches awaiting release" in dashboard


def test_qc_entry_page_shows_field_errors(lab: Lab, client) -> None:
    number = lab.made()
    page_login(client, lab.analyst)
    page = client.get(f"/qc/{number}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Record result" in html
    token = csrf_from(html)
    bad = client.post(f"/qc/{number}", data={
        "csrf_token": token, "test": "endotoxin", "value": "2", "unit": "IU/mL",
        "password": lab.analyst.password})
    assert bad.status_code == 422
    assert 'class="field-error"' in bad.get_data(as_text=True)
    assert "EU/mL" in bad.get_data(as_text=True)
    good = client.post(f"/qc/{number}", data={
        "csrf_token": token, "test": "endotoxin", "value": "2",
        "password": lab.analyst.password})
    assert good.status_code == 302
    html = client.get(f"/qc/{number}").get_data(as_text=True)
    assert "PASS" in html and "pass" in html
    assert "QC pending" in client.get("/").get_data(as_text=True)
    assert number in client.get("/qc").get_data(as_text=True)
