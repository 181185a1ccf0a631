"""The batches HTTP API (SPEC §7), pages (§7b) and command line (§8)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

import processes.services as processes
from gmp_mes.clock import clock, utcnow
from tests.conftest import sig
from tests.helpers import assert_problem
from tests.test_batches_fixtures import Plant, bad_value, good_values, plant_fixture  # noqa: F401
from tests.test_pages_core import csrf_from, page_login


def step_body(plant: Plant, number: str, code: str, **values) -> dict:
    step = plant.definition(number).step(code)
    body = {"values": {**good_values(step), **values}, "signature": sig()}
    if step.critical:
        body["verifier"] = {"username": plant.operator2.username, "password": "x"}
        body["verifier"]["password"] = plant.operator2.password
    return body


def test_processes_list_and_approval_by_qa_only(app, db, make_user, login) -> None:

    qa, op = make_user("quinn", "qa"), make_user("olga", "operator")
    with app.app_context(), db.transaction(actor=qa.actor) as s:
        processes.load_process_definitions(s)
    listed = login(op).get("/api/v1/processes")
    assert listed.status_code == 200
    assert [(p["code"], p["version"], p["approved"]) for p in listed.get_json()] == [
        ("CART-AUTO", 1, False), ("CART-AUTO", 2, False),
        ("CART-AUTO", 3, False), ("CART-AUTO", 4, False),
        ("CART-AUTO", 5, False), ("CART-AUTO", 6, False),
        ("CART-AUTO", 7, False)]
    path = "/api/v1/processes/CART-AUTO/versions/1/approve"
    assert_problem(login(op).post(path, json={"signature": sig("approved")}), 403,
                   "forbidden_role")
    assert_problem(login(qa).post(path, json={"signature": sig("performed")}), 422)
    assert_problem(login(qa).post(path, json={"signature": sig("approved", "wrong")}), 401,
                   "signature_rejected")
    approved = login(qa).post(path, json={"signature": sig("approved")})
    assert approved.status_code == 200, approved.get_json()
    body = approved.get_json()
    assert body["approved"] and body["approval_signature"]["meaning"] == "approved"
    assert "Quinn" in body["approval_signature"]["manifestation"]
    assert_problem(login(qa).post("/api/v1/processes/NOPE/versions/1/approve",
                                  json={"signature": sig("approved")}), 404, "not_found")
    detail = login(op).get("/api/v1/processes/CART-AUTO/versions/1").get_json()
    assert detail["definition"]["steps"][0]["code"] == "receipt"


def test_start_batch_and_record_steps(plant: Plant, login) -> None:
    api = login(plant.operator)
    item = plant.starting_material()
    started = api.post("/api/v1/batches", json={"item_id": item, "process_code": "CART-AUTO"})
    assert started.status_code == 201, started.get_json()
    batch = started.get_json()
    number = batch["batch_number"]
    assert batch["status"] == "in_process" and batch["next_steps"] == ["receipt"]
    assert [s["code"] for s in batch["steps"]][:2] == ["receipt", "selection"]
    assert_problem(api.post("/api/v1/batches", json={"item_id": item}), 409, "already_exists")

    out_of_order = api.post(f"/api/v1/batches/{number}/steps/selection",
                            json=step_body(plant, number, "selection"))
    assert_problem(out_of_order, 409, "invalid_transition")
    assert out_of_order.get_json()["next_steps"] == ["receipt"]

    recorded = api.post(f"/api/v1/batches/{number}/steps/receipt",
                        json=step_body(plant, number, "receipt"))
    assert recorded.status_code == 201, recorded.get_json()
    body = recorded.get_json()
    assert body["record"]["signature"]["meaning"] == "performed"
    assert body["record"]["verifier_signature"]["username"] == plant.operator2.username
    assert body["deviations"] == [] and body["batch_status"] == "in_process"

    viability = plant.definition(number).step("selection").parameter("viability_pct")
    held = api.post(f"/api/v1/batches/{number}/steps/selection",
                    json=step_body(plant, number, "selection",
                                   viability_pct=bad_value(viability)))
    assert held.status_code == 201
    assert held.get_json()["batch_status"] == "on_hold"
    [deviation] = held.get_json()["deviations"]
    assert deviation["severity"] == "major"

    got = api.get(f"/api/v1/batches/{number}").get_json()
    assert got["status"] == "on_hold" and got["deviations"][0]["number"] == deviation["number"]
    assert {b["code"] for b in got["release_blockers"]} == {"steps_incomplete",
                                                           "open_deviation"}
    listed = api.get("/api/v1/batches?status=on_hold").get_json()
    assert [b["batch_number"] for b in listed] == [number]


def test_expired_starting_material_is_409_expired(plant: Plant, login) -> None:
    item = plant.starting_material(collected_hours_ago=47.9)
    clock.freeze(utcnow() + timedelta(hours=1))
    assert_problem(login(plant.operator).post("/api/v1/batches", json={"item_id": item}),
                   409, "expired")


def test_start_batch_bad_input(plant: Plant, login) -> None:
    api = login(plant.operator)
    for body, status, field in [
        ({}, 422, "item_id"),
        ({"item_id": "ITM-AAAAAAAA", "extra": 1}, 422, "extra"),
        ({"item_id": 12}, 422, "item_id"),
        ({"item_id": "ITM-NOTTHERE"}, 404, None),
        ({"item_id": "x", "process_version": "one"}, 422, "process_version"),
    ]:
        problem = assert_problem(api.post("/api/v1/batches", json=body), status)
        if field:
            assert field in problem["errors"], problem


def test_bad_step_requests_are_problems_not_500(plant: Plant, login) -> None:
    api = login(plant.operator)
    number = plant.start()
    path = f"/api/v1/batches/{number}/steps/receipt"
    good = step_body(plant, number, "receipt")
    assert_problem(api.post(path, json={**good, "values": [1, 2]}), 422)
    assert_problem(api.post(path, json={"values": good["values"]}), 422)
    assert_problem(api.post(path, json={**good, "values": {**good["values"], "x": 1}}), 422)
    assert_problem(api.post(path, data="{not json", headers={"Content-Type":
                                                             "application/json"}), 400)
    assert_problem(api.post(path, json={**good, "signature": sig(password="bad")}), 401,
                   "signature_rejected")
    assert_problem(api.post(f"/api/v1/batches/{number}/steps/nope", json=good), 404)
    assert_problem(api.post("/api/v1/batches/NOPE-1/steps/receipt", json=good), 404)
    assert_problem(login(plant.qa).post(path, json=good), 403, "forbidden_role")
    huge = {**good, "values": {**good["values"], "volume_ml": 1e400}}
    response = api.post(path, data=json.dumps(huge).replace("inf", "1e400"),
                        headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 422)


def test_fill_lists_created_items_and_correction_keeps_original(plant: Plant, login) -> None:
    api = login(plant.operator)
    number = plant.start()
    plant.run_to(number, "harvest", expansion_days=1)
    body = step_body(plant, number, "fill", bags=2)
    filled = api.post(f"/api/v1/batches/{number}/steps/fill", json=body)
    assert filled.status_code == 201, filled.get_json()
    items = filled.get_json()["items"]
    assert len(items) == 2 and {i["status"] for i in items} == {"quarantine"}
    assert {i["kind"] for i in items} == {"final_product"}

    correction = {**body, "values": {**body["values"], "fill_volume_ml": 20.0},
                  "reason": "volume read from the wrong scale"}
    corrected = api.post(f"/api/v1/batches/{number}/steps/fill/corrections", json=correction)
    assert corrected.status_code == 201, corrected.get_json()
    assert corrected.get_json()["record"]["version"] == 2
    assert corrected.get_json()["record"]["items"] == [i["item_id"] for i in items]
    fill = next(s for s in api.get(f"/api/v1/batches/{number}").get_json()["steps"]
                if s["code"] == "fill")
    assert [r["version"] for r in fill["records"]] == [2]
    assert [r["version"] for r in fill["superseded"]] == [1]
    more_bags = {**correction, "values": {**correction["values"], "bags": 3}}
    assert_problem(api.post(f"/api/v1/batches/{number}/steps/fill/corrections",
                            json=more_bags), 409, "invalid_transition")
    no_reason = {k: v for k, v in correction.items() if k != "reason"}
    assert_problem(api.post(f"/api/v1/batches/{number}/steps/fill/corrections",
                            json=no_reason), 422)


def test_deviation_api_open_assess_close(plant: Plant, login) -> None:
    number = plant.start()
    opened = login(plant.operator).post(f"/api/v1/batches/{number}/deviations", json={
        "severity": "major", "description": "Incubator door found open for 10 minutes"})
    assert opened.status_code == 201, opened.get_json()
    ref = opened.get_json()["number"]
    assert login(plant.operator).get(f"/api/v1/batches/{number}").get_json()["status"] == \
        "on_hold"
    qa = login(plant.qa)
    assert_problem(login(plant.operator).post(f"/api/v1/deviations/{ref}/assess", json={
        "assessment": "x", "signature": sig("reviewed")}), 403)
    assessed = qa.post(f"/api/v1/deviations/{ref}/assess", json={
        "assessment": "Temperature log within 37 ± 1 °C; no impact", "severity": "minor",
        "signature": sig("reviewed")})
    assert assessed.status_code == 200, assessed.get_json()
    assert assessed.get_json()["status"] == "assessed"
    assert assessed.get_json()["assessment_signature"]["meaning"] == "reviewed"
    closed = qa.post(f"/api/v1/deviations/{opened.get_json()['id']}/close", json={
        "closure": "Closed, door alarm added (CAPA-77)", "signature": sig("approved")})
    assert closed.status_code == 200 and closed.get_json()["status"] == "closed"
    assert_problem(qa.post(f"/api/v1/deviations/{ref}/close", json={
        "closure": "again", "signature": sig("approved")}), 409, "invalid_transition")
    assert_problem(qa.post("/api/v1/deviations/NOPE/close", json={
        "closure": "x", "signature": sig("approved")}), 404)
    assert_problem(login(plant.operator).post(f"/api/v1/batches/{number}/deviations", json={
        "severity": "huge", "description": "x"}), 422)


def test_record_exports_from_the_api(plant: Plant, login) -> None:
    number = plant.start()
    plant.record(number, "receipt")
    api = login(plant.qa)
    pdf = api.get(f"/api/v1/batches/{number}/record.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert pdf.data.startswith(b"%PDF")
    data = api.get(f"/api/v1/batches/{number}/record.json").get_json()
    assert data["batch_number"] == number and data["steps"][0]["records"]
    assert_problem(api.get(f"/api/v1/batches/{number}/record.xml"), 422)
    assert_problem(login(plant.clinician).get(f"/api/v1/batches/{number}/record.pdf"), 403)


def test_batch_pages(plant: Plant, client) -> None:
    number = plant.start()
    plant.run_to(number, "transduction")
    plant.record(number, "expansion")
    plant.record(number, "expansion", {"viable_cells": 5.0e5, "viability_pct": 90.0})
    page_login(client, plant.operator)
    html = client.get(f"/batches/{number}").get_data(as_text=True)
    assert number in html and "Electronic signature" in html and 'class="chart curve"' in html
    assert "fail: deviation" in html and 'data-min="70.0"' in html
    assert "Olga (olga)" in html  # signature manifestation
    listing = client.get("/batches").get_data(as_text=True)
    assert number in listing
    dashboard = client.get("/").get_data(as_text=True)
    assert number in dashboard and "Expansion, daily count or Harvest and wash" in dashboard
    token = csrf_from(html)
    step = plant.definition(number).step("expansion")
    form = {f"v_{k}": str(v) for k, v in good_values(step).items()}
    posted = client.post(f"/batches/{number}/steps/expansion",
                         data={**form, "csrf_token": token, "password": "wrong",
                               "meaning": "performed"})
    # Issue 15: the refused form comes back with every value typed (never the password)
    # and says whose signature failed, at the field and in a summary that takes focus.
    assert posted.status_code == 401
    again = posted.get_data(as_text=True)
    assert "Your signature (performer) failed" in again and "data-focus" in again
    assert "your password (the performer&#39;s) was wrong" in again
    for name, value in form.items():
        assert f'name="{name}"' in again and f'value="{value}"' in again, name
    assert 'value="wrong"' not in again
    posted = client.post(f"/batches/{number}/steps/expansion",
                         data={**form, "csrf_token": token, "password": plant.operator.password,
                               "meaning": "performed"})
    assert posted.status_code == 302
    with plant.tx() as s:
        from batches import services

        records = services.current_records(s, services.get_batch(s, number))
        assert sum(r.step_code == "expansion" for r in records) == 3
    assert client.get(f"/batches/{number}/record.pdf").data.startswith(b"%PDF")


def test_process_page_and_approval_form(app, db, make_user, client) -> None:

    qa = make_user("quinn", "qa")
    with app.app_context(), db.transaction(actor=qa.actor) as s:
        processes.load_process_definitions(s)
    page_login(client, qa)
    html = client.get("/processes").get_data(as_text=True)
    assert "awaiting QA approval" in html and "Ph. Eur. 2.6.27" in html
    response = client.post("/processes/CART-AUTO/1/approve", data={
        "csrf_token": csrf_from(html), "password": qa.password, "meaning": "approved"})
    assert response.status_code == 302
    assert "Quinn (quinn)" in client.get("/processes").get_data(as_text=True)


def test_cli_processes_and_export(app, db, make_user, runner, tmp_path) -> None:
    qa = make_user("quinn", "qa")
    result = runner.invoke(args=["init"])
    assert result.exit_code == 0, result.output
    assert "CART-AUTO/v1: loaded" in result.output
    listed = runner.invoke(args=["processes", "list"])
    assert "awaiting QA approval" in listed.output
    wrong = runner.invoke(args=["processes", "approve", "CART-AUTO", "1", "--user", "quinn",
                                "--password-stdin"], input="nope\n")
    assert wrong.exit_code != 0 and "password does not match" in wrong.output
    ok = runner.invoke(args=["processes", "approve", "CART-AUTO", "1", "--user", "quinn",
                             "--password-stdin"], input=qa.password + "\n")
    assert ok.exit_code == 0, ok.output
    assert "approved" in runner.invoke(args=["processes", "list"]).output
    missing = runner.invoke(args=["export", "batch", "NOPE-1", "--format", "json"])
    assert missing.exit_code != 0 and "no batch" in missing.output


def test_cli_export_writes_the_record(plant: Plant, runner, tmp_path) -> None:
    number = plant.start()
    plant.record(number, "receipt")
    target = tmp_path / "record.pdf"
    result = runner.invoke(args=["export", "batch", number, "--format", "pdf", "-o",
                                 str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_bytes().startswith(b"%PDF")
    as_json = runner.invoke(args=["export", "batch", number, "--format", "json"])
    assert json.loads(as_json.stdout_bytes)["batch_number"] == number


def test_deviation_forms_on_the_batch_page(plant: Plant, client) -> None:
    number = plant.start()
    page_login(client, plant.operator)
    token = csrf_from(client.get(f"/batches/{number}").get_data(as_text=True))
    client.post(f"/batches/{number}/deviations", data={
        "csrf_token": token, "severity": "critical", "description": "Cabinet airflow alarm"})
    html = client.get(f"/batches/{number}").get_data(as_text=True)
    assert "Cabinet airflow alarm" in html
    assert plant.batch(number).status == "on_hold"
    client.post("/logout", data={"csrf_token": token})
    page_login(client, plant.qa)
    token = csrf_from(client.get(f"/batches/{number}").get_data(as_text=True))
    ref = f"{number}-D01"
    client.post(f"/deviations/{ref}/assess", data={
        "csrf_token": token, "text": "Airflow recovered in 30 s", "password": plant.qa.password,
        "meaning": "reviewed", "batch_number": number})
    client.post(f"/deviations/{ref}/close", data={
        "csrf_token": token, "text": "No impact", "password": plant.qa.password,
        "meaning": "approved", "batch_number": number})
    html = client.get(f"/batches/{number}").get_data(as_text=True)
    assert "Quinn (quinn)" in html and "critical · closed" in html
    assert plant.batch(number).status == "in_process"


@pytest.fixture
def bad_process_dir(app_config, tmp_path):
    folder = tmp_path / "processes"
    folder.mkdir()
    (folder / "broken.toml").write_text(
        'code = "CART-X"\nversion = 1\nname = "x"\n[shelf_life]\n'
        'starting_material = "48 hours"\nfinal_product = "P1D"\n'
        '[[steps]]\ncode = "receipt"\nname = "Receipt"\n'
    )
    app_config["process_dir"] = str(folder)
    return folder


def test_init_refuses_a_bad_process_file_naming_file_and_field(bad_process_dir, runner,
                                                              login, make_user) -> None:
    result = runner.invoke(args=["init"])
    assert result.exit_code != 0
    assert "broken.toml" in result.output and "shelf_life.starting_material" in result.output
    assert "nothing loaded" in result.output
    listed = login(make_user("olga", "operator")).get("/api/v1/processes").get_json()
    assert listed == []  # the valid default file was not half-loaded either
