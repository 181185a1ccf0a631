"""The whole chain through the HTTP API only, as scanners, LIMS and bedside devices use it
(issue 6 "done when"): enrol -> collect -> manufacture (every step, fill) -> QC -> release
-> ship -> receive -> bedside match -> administer, on SQLite and PostgreSQL.

The only set-up outside the API is what `gmp-mes init` and `gmp-mes sites/users create`
do (SPEC §8): sites, users and the loaded (unapproved) process definition.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

import processes.services as processes
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from tests.conftest import ApiClient, sig

PLANT, HOSPITAL, APHERESIS = "CLEAN1", "HOSP1", "APH1"
QR_IN_ZPL = re.compile(r"\^FDMA,(GMP1:[^^]+)\^FS")


def good(param: dict[str, Any]) -> Any:
    """A value inside a step parameter's limits, from the batch's own step list."""
    if param["type"] == "boolean":
        return True if param["expected"] is None else param["expected"]
    if param["type"] == "text":
        return "LOT-2611-A"
    low, high = param["min"], param["max"]
    if low is not None and high is not None:
        value = (low + high) / 2
    elif low is not None:
        value = low * 2 if low > 0 else low + 1
    elif high is not None:
        value = high - 1
    else:
        value = 1.0
    return round(value) if param["type"] == "integer" else value


def passing(test: dict[str, Any]) -> dict[str, Any]:
    """A result inside the specification the QC overview states."""
    if test["accept"] is not None:
        return {"outcome": test["accept"]}
    low, high = test["min"], test["max"]
    if low is not None and high is not None:
        return {"value": (low + high) / 2}
    return {"value": low * 2} if low is not None else {"value": high / 2}


def payload(api: ApiClient, item_id: str) -> str:
    """Print the item's label (ZPL) and read the QR content, as a scanner would."""
    response = api.get(f"/api/v1/items/{item_id}/label?format=zpl")
    assert response.status_code == 200, response.get_data(as_text=True)
    found = QR_IN_ZPL.search(response.get_data(as_text=True))
    assert found, "no QR code in the ZPL label"
    return found.group(1)


def ok(response: Any, status: int = 201) -> Any:
    assert response.status_code == status, (response.status_code, response.get_json())
    return response.get_json()


@pytest.fixture
def people(app, db, make_site, make_user, login) -> dict[str, ApiClient]:

    make_site(PLANT, "manufacturing")
    make_site(APHERESIS, "collection")
    make_site(HOSPITAL, "treatment")
    persons = {
        "clinician": make_user("carla", "clinician", site=HOSPITAL),
        "apheresis": make_user("april", "clinician", site=APHERESIS),
        "operator": make_user("otto", "operator"),
        "verifier": make_user("vera", "operator"),
        "analyst": make_user("quade", "qc"),
        "qa": make_user("quella", "qa"),
    }
    with app.app_context(), db.transaction(actor=Actor.system("init")) as s:
        processes.load_process_definitions(s)  # what `gmp-mes init` does
    clients = {role: login(person) for role, person in persons.items()}
    clients["verifier_person"] = persons["verifier"]  # type: ignore[assignment]
    return clients


def step_body(step: dict[str, Any], *, bags: int, scan: str, verifier: Any) -> dict[str, Any]:
    """A step record's body from the batch's own step list: in-limit values, the bags of
    the filling step, the starting material's label scanned at receipt (the identity
    check) and the second person of a critical step."""
    values = {p["code"]: good(p) for p in step["parameters"]}
    if step["creates"] == "final_product":
        values["bags"] = bags
    body: dict[str, Any] = {"values": values, "signature": sig()}
    if step["code"] == "receipt":
        body["scan"] = scan
    if step["critical"]:
        body["verifier"] = {"username": verifier.username, "password": verifier.password}
    return body


def manufacture(people: dict[str, Any], *, bags: int = 1) -> tuple[str, str, str, list[str]]:
    """Enrol, collect, approve the process, run every step; (coi, wristband, batch, bags)."""
    clinician, operator, qa = people["clinician"], people["operator"], people["qa"]
    verifier = people["verifier_person"]
    ok(qa.post("/api/v1/processes/CART-AUTO/versions/1/approve",
               json={"signature": sig("approved")}), 200)
    patient = ok(clinician.post("/api/v1/patients", json={
        "given_name": "Ada", "family_name": "Lovelace", "date_of_birth": "1985-12-10",
        "mrn": "MRN-0815", "treatment_site": HOSPITAL}))
    coi_id, wristband = patient["coi_id"], patient["wristband_item_id"]
    collection = ok(clinician.post("/api/v1/collections", json={
        "coi_id": coi_id, "collected_at": (utcnow() - timedelta(hours=2)).isoformat(),
        "site": APHERESIS, "volume_ml": 210.0}))
    starting = collection["item"]["item_id"]
    # The apheresis site ships the bag; the plant receives it (chain of custody).
    starting_label = payload(people["apheresis"], starting)
    ok(people["apheresis"].post(f"/api/v1/items/{starting}/custody",
                                json={"action": "ship", "site": PLANT}))
    ok(operator.post(f"/api/v1/items/{starting}/custody",
                     json={"action": "receive", "site": PLANT, "location": "SM fridge"}))
    # The Start batch field takes the scanned label as well as the id.
    batch = ok(operator.post("/api/v1/batches", json={"item_id": starting_label,
                                                      "process_code": "CART-AUTO"}))
    number = batch["batch_number"]
    assert batch["coi_id"] == coi_id and batch["status"] == "in_process"
    assert batch["starting_item_id"] == starting
    created: list[str] = []
    for step in batch["steps"]:
        body = step_body(step, bags=bags, scan=starting_label, verifier=verifier)
        outcome = ok(operator.post(f"/api/v1/batches/{number}/steps/{step['code']}",
                                   json=body))
        assert outcome["deviations"] == [], outcome
        created += [item["item_id"] for item in outcome["items"]]
    assert ok(operator.get(f"/api/v1/batches/{number}"), 200)["status"] == "awaiting_release"
    assert len(created) == bags
    return coi_id, wristband, number, created


def enter_qc(people: dict[str, Any], number: str, *, skip: tuple[str, ...] = ()) -> None:
    analyst = people["analyst"]
    overview = ok(analyst.get(f"/api/v1/batches/{number}/qc"), 200)
    for test in overview["tests"]:
        if test["test"] in skip:
            continue
        result = ok(analyst.post(f"/api/v1/batches/{number}/qc-results", json={
            "test": test["test"], **passing(test), "signature": sig()}))
        assert result["passed"] is True, (test, result)


def deliver(people: dict[str, Any], bag: str) -> None:
    operator, clinician = people["operator"], people["clinician"]
    ok(operator.post(f"/api/v1/items/{bag}/custody", json={"action": "ship", "site": HOSPITAL}))
    ok(clinician.post(f"/api/v1/items/{bag}/custody",
                      json={"action": "receive", "site": HOSPITAL, "location": "LN2-1"}))
    ok(clinician.post(f"/api/v1/items/{bag}/custody", json={"action": "thaw", "site": HOSPITAL}))


@pytest.mark.requirement("SPEC §5, §6, §7")
def test_full_path_through_the_api(people: dict[str, Any]) -> None:
    coi_id, wristband, number, (bag,) = manufacture(people)
    clinician, qa, operator = people["clinician"], people["qa"], people["operator"]
    # Nothing leaves quarantine before QC and QA release.
    refused = qa.post(f"/api/v1/batches/{number}/release", json={"signature": sig("released")})
    assert refused.status_code == 409 and refused.get_json()["code"] == "qc_incomplete"
    enter_qc(people, number)
    release = ok(qa.post(f"/api/v1/batches/{number}/release",
                         json={"signature": sig("released")}))
    assert release["batch_status"] == "released" and release["item_statuses"] == {
        bag: "released"}
    product, patient = payload(operator, bag), payload(clinician, wristband)
    scan = ok(operator.post("/api/v1/scans", json={"payload": product + "\r\n",
                                                   "workstation": "WS-7"}), 200)
    assert scan["ok"] is True and scan["coi_id"] == coi_id
    deliver(people, bag)
    verdict = ok(clinician.post("/api/v1/bedside/verify", json={
        "patient_payload": patient, "product_payload": product}), 200)
    assert verdict["match"] is True, verdict
    given = clinician.post("/api/v1/administrations", json={
        "patient_payload": patient, "product_payload": product,
        "signature": sig("administered")})
    assert given.status_code == 201, given.get_json()
    item = ok(clinician.get(f"/api/v1/items/{bag}"), 200)
    assert item["status"] == "administered"
    actions = [event["action"] for event in item["custody"]]
    assert [a for a in actions if a in ("ship", "receive", "thaw")] == ["ship", "receive", "thaw"]
    again = clinician.post("/api/v1/bedside/verify", json={
        "patient_payload": patient, "product_payload": product}).get_json()
    assert again["match"] is False


@pytest.mark.requirement("SPEC §5 (result after release)")
def test_conditional_release_then_positive_sterility_blocks_at_the_bedside(
    people: dict[str, Any],
) -> None:
    _, wristband, number, (infused, waiting) = manufacture(people, bags=2)
    clinician, qa, operator = people["clinician"], people["qa"], people["operator"]
    enter_qc(people, number, skip=("sterility",))
    release = ok(qa.post(f"/api/v1/batches/{number}/release", json={
        "signature": sig("released"),
        "conditional": {"justification": "rapid progression; sterility day 3 no growth"}}))
    assert release["conditional"] is True
    assert set(release["item_statuses"].values()) == {"conditionally_released"}
    patient = payload(clinician, wristband)
    first, second = payload(operator, infused), payload(operator, waiting)
    for bag in (infused, waiting):
        deliver(people, bag)
    ok(clinician.post("/api/v1/administrations", json={
        "patient_payload": patient, "product_payload": first,
        "signature": sig("administered")}))
    late = ok(people["analyst"].post(f"/api/v1/batches/{number}/qc-results", json={
        "test": "sterility", "outcome": "positive", "signature": sig()}))
    assert late["passed"] is False
    verdict = ok(clinician.post("/api/v1/bedside/verify", json={
        "patient_payload": patient, "product_payload": second}), 200)
    assert verdict["match"] is False
    assert "blocked" in [r["code"] for r in verdict["reasons"]], verdict
    alerts = [a for a in ok(clinician.get("/api/v1/alerts?status=open"), 200)
              if a["kind"] == "qc_positive_after_release"]
    assert len(alerts) == 1 and alerts[0]["severity"] == "critical"
    assert infused in alerts[0]["message"]  # the clinician learns what was already given
