"""Identity HTTP API: enrolment, collections, items, custody, scans, FHIR."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fhir.resources.biologicallyderivedproduct import BiologicallyDerivedProduct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmp_mes.clock import clock, utcnow
from identity import services
from tests.conftest import sig  # noqa: F401
from tests.helpers import assert_problem, audit_events, count
from tests.test_identity_fixtures import (  # noqa: F401
    APHERESIS,
    OTHER_TREATMENT,
    PLANT,
    TREATMENT,
    World,
    world_fixture,
)


def _enrol_body(**kw):
    body = {"given_name": "Ada", "family_name": "Lovelace", "date_of_birth": "1970-05-17",
            "mrn": "H-0001", "treatment_site": TREATMENT}
    body.update(kw)
    return body


def test_enrol_and_get_patient(world: World, login) -> None:
    api = login(world.clinician)
    response = api.post("/api/v1/patients", json=_enrol_body())
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert len(body["coi_id"]) == 14 and body["wristband_item_id"].startswith("ITM-")
    assert body["coi_label"] == f"{body['coi_id'][:5]} {body['coi_id'][5:7]} {body['coi_id'][7:13]}"
    again = login(world.operator).get(f"/api/v1/patients/{body['coi_id']}")
    assert again.status_code == 200
    kinds = [i["kind"] for i in again.get_json()["items"]]
    assert kinds == ["wristband"]
    assert again.get_json()["batches"] == []


def test_duplicate_enrolment_is_409_naming_the_coi(world: World, login) -> None:
    api = login(world.clinician)
    first = api.post("/api/v1/patients", json=_enrol_body()).get_json()
    problem = assert_problem(api.post("/api/v1/patients", json=_enrol_body()), 409,
                             "already_enrolled")
    assert problem["coi_id"] == first["coi_id"] and first["coi_id"] in problem["detail"]


def test_enrolment_roles_and_validation(world: World, login) -> None:
    assert_problem(login(world.operator).post("/api/v1/patients", json=_enrol_body()), 403,
                   "forbidden_role")
    api = login(world.clinician)
    problem = assert_problem(api.post("/api/v1/patients", json=_enrol_body(
        date_of_birth="not a date", extra="x")), 422, "validation_error")
    assert {"date_of_birth", "extra"} <= set(problem["errors"])
    problem = assert_problem(api.post("/api/v1/patients", json=_enrol_body(
        treatment_site="NOPE")), 422, "validation_error")
    assert "treatment_site" in problem["errors"]
    assert_problem(api.post("/api/v1/patients", data="{", headers={
        "Content-Type": "application/json"}), 400)
    assert_problem(api.get("/api/v1/patients/A9999260000990"), 404, "not_found")


def test_collection_api(world: World, login) -> None:
    patient = world.enrol()
    api = login(world.operator)
    collected = (utcnow() - timedelta(hours=2)).replace(microsecond=0)
    response = api.post("/api/v1/collections", json={
        "coi_id": patient["coi_id"], "collected_at": collected.isoformat(), "site": APHERESIS,
        "volume_ml": 212.5, "din": "A9999211234563"})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["item"]["kind"] == "starting_material"
    assert body["item"]["expiry_warnings"] == ["PT24H", "PT4H"]
    assert body["din"] == "A9999211234563" and body["volume_ml"] == 212.5
    problem = assert_problem(api.post("/api/v1/collections", json={
        "coi_id": patient["coi_id"], "collected_at": (utcnow() + timedelta(days=1)).isoformat(),
        "site": APHERESIS, "volume_ml": 10, "din": "A9999211234564"}), 422)
    assert {"collected_at", "din"} <= set(problem["errors"])
    problem = assert_problem(api.post("/api/v1/collections", json={
        "coi_id": patient["coi_id"], "collected_at": "2026-01-01T10:00:00",
        "site": APHERESIS, "volume_ml": 10}), 422)
    assert "collected_at" in problem["errors"]  # naive time refused
    assert_problem(login(world.qa).post("/api/v1/collections", json={}), 403)


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_custody_trail_ship_receive_thaw(world: World, login) -> None:
    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="released", post_thaw_window="PT3H",
                     expires_at=utcnow() + timedelta(days=30))
    op = login(world.operator)
    ship = op.post(f"/api/v1/items/{bag}/custody", json={"action": "ship", "site": TREATMENT})
    assert ship.status_code == 201, ship.get_json()
    assert ship.get_json()["destination_site"] == TREATMENT
    doc = login(world.clinician)
    received = doc.post(f"/api/v1/items/{bag}/custody",
                        json={"action": "receive", "site": TREATMENT, "location": "Ward 3"})
    assert received.status_code == 201 and received.get_json()["flagged"] is False
    clock.freeze(utcnow())
    thawed = doc.post(f"/api/v1/items/{bag}/custody", json={"action": "thaw", "site": TREATMENT})
    assert thawed.status_code == 201
    item = doc.get(f"/api/v1/items/{bag}").get_json()
    assert item["status"] == "thawed" and item["site_code"] == TREATMENT
    assert item["thawed_at"] is not None
    assert [e["action"] for e in item["custody"]] == ["create", "ship", "receive", "thaw"]
    assert all(e["username"] and e["occurred_at"] for e in item["custody"])
    # Thawed cannot be shipped again: the state machine answers, not the view.
    assert_problem(doc.post(f"/api/v1/items/{bag}/custody",
                            json={"action": "ship", "site": PLANT}), 409, "invalid_transition")
    assert_problem(login(world.operator).post(f"/api/v1/items/{bag}/custody",
                                              json={"action": "fly", "site": PLANT}), 422)


def test_receipt_at_wrong_site_is_refused_and_alerted(world: World, login,
                                                     make_user) -> None:
    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="released")
    op = login(world.operator)
    op.post(f"/api/v1/items/{bag}/custody", json={"action": "ship", "site": TREATMENT})
    other = login(make_user("nina", "clinician", site=OTHER_TREATMENT))
    received = other.post(f"/api/v1/items/{bag}/custody",
                          json={"action": "receive", "site": OTHER_TREATMENT})
    problem = assert_problem(received, 409, "wrong_destination")
    assert problem["expected_site"] == TREATMENT
    assert count(world.db, "alert") == 1  # QA is told, in its own transaction
    assert world.get(bag).status == "shipped" and world.get(bag).site_code == PLANT


def test_admin_cannot_record_custody(world: World, login, make_user) -> None:
    admin = make_user("root", "admin", site=PLANT)
    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="released")
    assert_problem(login(admin).post(f"/api/v1/items/{bag}/custody",
                                     json={"action": "move", "site": PLANT}), 403)


def test_item_genealogy_both_ways(world: World, login) -> None:
    patient = world.enrol()
    sm = world.collect(patient["coi_id"])
    im = world.item(patient["coi_id"], kind="intermediate", status="in_process", parents=(sm,))
    bag = world.item(patient["coi_id"], status="quarantine", parents=(im,))
    api = login(world.qa)
    assert api.get(f"/api/v1/items/{bag}").get_json()["ancestors"] == [im, sm]
    top = api.get(f"/api/v1/items/{sm}").get_json()
    assert top["children"] == [im] and top["descendants"] == [im, bag]
    assert_problem(api.get("/api/v1/items/ITM-NOPE0000"), 404)


@pytest.mark.requirement("HL7 FHIR R5")
def test_fhir_biologically_derived_product(world: World, login) -> None:
    patient = world.enrol()
    sm = world.collect(patient["coi_id"], din="A9999211234563")
    bag = world.item(patient["coi_id"], status="quarantine", parents=(sm,), batch_number="B-7",
                     expires_at=utcnow() + timedelta(days=270))
    api = login(world.qa)
    for item_id, status in ((bag, "unavailable"), (sm, "available")):
        response = api.get(f"/api/v1/items/{item_id}/fhir")
        assert response.status_code == 200
        data = response.get_json()
        product = BiologicallyDerivedProduct.model_validate(data)
        assert product.productCategory.code == "cells"
        assert product.productStatus.code in services.FHIR_STATUS_CODES
        assert product.productStatus.code == status
        assert product.biologicalSourceEvent.value == patient["coi_id"]
        assert product.collection.source.identifier.value == patient["coi_id"]
        assert product.processingFacility[0].display
    fhir = api.get(f"/api/v1/items/{bag}/fhir").get_json()
    assert fhir["parent"][0]["identifier"]["value"] == sm
    assert fhir["expirationDate"].endswith("Z")
    world.set_status(bag, "released")
    assert api.get(f"/api/v1/items/{bag}/fhir").get_json()["productStatus"]["code"] == "available"


# --- scans -------------------------------------------------------------------------------

def _scan(api, payload, **kw):
    return api.post("/api/v1/scans", json={"payload": payload, "workstation": "WS-1", **kw})


def test_valid_scan_from_keyboard_wedge(world: World, login) -> None:
    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="quarantine", expires_at=utcnow()
                     + timedelta(days=3))
    payload = world.payload(bag)
    api = login(world.operator)
    for typed in (payload + "\r\n", "  " + payload.lower() + "\n", payload + "\t"):
        response = _scan(api, typed)
        assert response.status_code == 200
        body = response.get_json()
        assert body["ok"] is True, body
        assert body["item"]["item_id"] == bag and body["coi_id"] == patient["coi_id"]
        assert body["status"] == "quarantine" and body["reasons"] == []
    trail = api.get(f"/api/v1/items/{bag}").get_json()["custody"]
    scans = [e for e in trail if e["action"] == "scan"]
    assert len(scans) == 3 and all(e["ok"] and e["workstation"] == "WS-1" for e in scans)


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_each_scan_is_one_custody_row_with_its_attributable_audit_event(world: World,
                                                                        login) -> None:
    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="quarantine")
    api = login(world.operator)
    assert _scan(api, world.payload(bag)).get_json()["ok"] is True
    event = api.get(f"/api/v1/items/{bag}").get_json()["custody"][-1]
    assert event["action"] == "scan" and event["username"] == world.operator.username
    audited = audit_events(world.db, entity_type="custody_event", entity_id=str(event["id"]))
    assert len(audited) == 1 and audited[0]["action"] == "create"
    assert audited[0]["username"] == world.operator.username
    recorded = json.loads(audited[0]["record"])["new"]
    assert recorded["id"] == event["id"] and recorded["item_id"] == bag
    assert recorded["workstation"] == "WS-1" and recorded["ok"] is True
    assert recorded["user_id"] == world.operator.user_id
    assert json.loads(recorded["detail"]) == event["detail"]


@pytest.mark.parametrize("garbage", ["", "   ", "hello", "GMP1:FP", "\x00\x01", "é" * 40,
                                     "GMP1:FP:ITM-AAAA:A999926000001X:-:" + "A" * 103,
                                     "x" * 5000])
def test_garbage_scans_are_refused_and_recorded(world: World, login, garbage: str) -> None:
    api = login(world.operator)
    response = _scan(api, garbage)
    if not garbage or len(garbage) > 2000:
        assert_problem(response, 422, "validation_error")
        return
    assert response.status_code == 200
    body = response.get_json()
    assert body["ok"] is False and body["item"] is None
    assert body["reasons"] and body["reasons"][0]["code"] in ("malformed", "unknown_item",
                                                              "bad_signature")
    assert [e for e in audit_events(world.db, entity_type="scan") if e["action"] ==
            "scan.refused"]


def test_truncated_scan(world: World, login) -> None:
    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="released")
    payload = world.payload(bag)
    body = _scan(login(world.operator), payload[:-10]).get_json()
    assert body["ok"] is False and body["reasons"][0]["code"] == "malformed"


@pytest.mark.requirement("21 CFR 11.10(c)")
def test_forged_scan_is_recorded_on_the_item_and_alerted(world: World, login) -> None:
    a, b = world.enrol(), world.enrol()
    bag = world.item(a["coi_id"], status="released")
    payload = world.payload(bag)
    # Someone re-labels patient A's bag with patient B's COI, keeping the signature.
    forged = payload.replace(a["coi_id"], b["coi_id"])
    api = login(world.operator)
    body = _scan(api, forged).get_json()
    assert body["ok"] is False and body["item"] is None
    assert [r["code"] for r in body["reasons"]] == ["bad_signature"]
    trail = api.get(f"/api/v1/items/{bag}").get_json()["custody"]
    assert trail[-1]["action"] == "scan" and trail[-1]["ok"] is False
    alerts = login(world.qa).get("/api/v1/alerts?status=open")
    if alerts.status_code == 200:
        assert any(x["kind"] == "label_forged" for x in alerts.get_json())
    assert count(world.db, "alert") == 1
    _scan(api, forged)  # the same forged label again: still one alert (one per cause)
    assert count(world.db, "alert") == 1


def test_scan_checks_batch_status_and_expiry(world: World, login) -> None:
    a, b = world.enrol(), world.enrol()
    bag = world.item(a["coi_id"], status="released", expires_at=utcnow() + timedelta(hours=2))
    payload = world.payload(bag)
    api = login(world.operator)
    world.set_status(bag, "blocked")
    clock.freeze(utcnow() + timedelta(hours=3))
    body = _scan(api, payload).get_json()
    assert body["ok"] is False
    assert {r["code"] for r in body["reasons"]} == {"blocked", "expired"}
    # The clock stays at +3 h: going back to the real time would be a backward step,
    # which the audit trail refuses (gmp_mes.audit.ClockWentBackwards).
    # A batch of another patient: the scan says coi_mismatch.
    from batches import services as batches

    if hasattr(batches, "batch_coi"):
        body = _scan(api, payload, batch_number="NO-SUCH-BATCH").get_json()
        assert "unknown_batch" in {r["code"] for r in body["reasons"]}
    _ = b


def test_voided_label_fails_scan(world: World, login) -> None:
    a = world.enrol()
    bag = world.item(a["coi_id"], status="released")
    op = login(world.operator)
    printed = op.get(f"/api/v1/items/{bag}/label?format=zpl")
    assert printed.status_code == 200, printed.get_data(as_text=True)[:300]
    label_id = printed.headers["X-Label-Id"].split(",")[0]
    # the printed copy's own payload (with its serial)
    payload = printed.get_data(as_text=True).split("^FDMA,")[1].split("^FS")[0]
    assert _scan(op, payload).get_json()["ok"] is True
    voided = op.post(f"/api/v1/items/{bag}/labels/{label_id}/void", json={"reason": "torn"})
    assert voided.status_code == 200, voided.get_json()
    body = _scan(op, payload).get_json()
    assert body["ok"] is False and "voided" in {r["code"] for r in body["reasons"]}
    assert count(world.db, "alert") == 1


def test_openapi_documents_identity(anonymous) -> None:
    spec = anonymous.get("/api/v1/openapi.json").get_json()
    for path in ("/api/v1/patients", "/api/v1/collections", "/api/v1/scans",
                 "/api/v1/bedside/verify", "/api/v1/administrations",
                 "/api/v1/items/{item_id}/fhir", "/api/v1/items/{item_id}/custody"):
        assert path in spec["paths"], path


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(
    st.text(max_size=300),
    st.text(alphabet="GMP1:FPWBSMIT-0123456789ABCDEFXYZ*$%+./ ", max_size=250),
    st.builds(lambda a, b: f"GMP1:FP:{a}:{b}", st.text(max_size=30), st.text(max_size=200)),
))
def test_random_scans_never_fail_and_are_refused(world: World, raw: str) -> None:
    """Whatever a scanner types, the scan answers (no exception) and refuses it."""
    from gmp_mes.models import User

    with world.app.app_context(), world.tx(world.operator) as s:
        user = s.get(User, world.operator.user_id)
        result = services.scan(s, raw, user=user, site_code=PLANT, workstation="FUZZ")
    assert result.ok is False and result.reasons and result.item is None


def test_control_characters_are_422_not_a_database_error(world: World, login) -> None:
    api = login(world.clinician)
    problem = assert_problem(api.post("/api/v1/patients", json=_enrol_body(
        given_name="Ada\x00", mrn="M\x07")), 422)
    assert {"given_name", "mrn"} <= set(problem["errors"])
    body = _scan(api, "GMP1:\x00:\x00").get_json()
    assert body["ok"] is False
    problem = assert_problem(api.post("/api/v1/scans", json={
        "payload": "x", "workstation": "WS\x00"}), 422)
    assert "workstation" in problem["errors"]


def test_expired_item_cannot_be_shipped_or_thawed(world: World, login) -> None:
    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="released", expires_at=utcnow()
                     + timedelta(hours=1))
    clock.freeze(utcnow() + timedelta(hours=2))
    op = login(world.operator)
    assert_problem(op.post(f"/api/v1/items/{bag}/custody",
                           json={"action": "ship", "site": TREATMENT}), 409, "expired")
    moved = op.post(f"/api/v1/items/{bag}/custody",
                    json={"action": "move", "site": PLANT, "location": "Quarantine cage"})
    assert moved.status_code == 201
