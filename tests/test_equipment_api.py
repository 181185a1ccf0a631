"""The equipment API (SPEC §11): register, list, signed logbook events with their
transitions, the computed status over time, the logbook by key, the database guards."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from gmp_mes.clock import clock
from tests.conftest import sig
from tests.helpers import assert_problem, audit_events
from tests.test_equipment_fixtures import Shop, shop_fixture  # noqa: F401

BSC = {"equipment_id": "bsc-01", "type": "biosafety_cabinet", "name": "Class II cabinet 1",
       "site": "CLEAN1", "calibration_interval": "P180D", "cleaning_required": True}


def _register(login, shop: Shop, body: dict | None = None):
    return login(shop.admin).post("/api/v1/equipment", json=body or BSC)


def test_register_and_read(shop: Shop, login) -> None:
    response = _register(login, shop)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["equipment_id"] == "BSC-01" and body["site"] == "CLEAN1"
    assert body["status"] == "calibration_overdue"  # an interval and no calibration yet
    assert body["calibration_valid_until"] is None and body["cleaning_required"] is True
    got = login(shop.operator).get("/api/v1/equipment/BSC-01").get_json()
    assert got["events"] == [] and got["uses"] == [] and got["events_older"] is None
    listed = login(shop.qa).get("/api/v1/equipment?type=biosafety_cabinet").get_json()
    assert [e["equipment_id"] for e in listed] == ["BSC-01"]


def test_register_refusals(shop: Shop, login) -> None:
    assert_problem(login(shop.operator).post("/api/v1/equipment", json=BSC), 403,
                   "forbidden_role")
    _register(login, shop)
    assert_problem(_register(login, shop), 409, "already_exists")
    bad = dict(BSC, equipment_id="BAD ID!", type="Biosafety Cabinet", site="NOWHERE",
               calibration_interval="every year")
    problem = assert_problem(_register(login, shop, bad), 422)
    assert set(problem["errors"]) == {"equipment_id", "type", "site", "calibration_interval"}
    assert_problem(_register(login, shop, dict(BSC, colour="red")), 422)
    for interval in ("PT0S", "P99999999999D", "P4000D"):
        problem = assert_problem(_register(login, shop, dict(
            BSC, equipment_id="BSC-9", calibration_interval=interval)), 422)
        assert list(problem["errors"]) == ["calibration_interval"]
    assert_problem(login(shop.admin).get("/api/v1/equipment/NOPE"), 404, "not_found")


@pytest.mark.requirement("21 CFR 211.68")
@pytest.mark.requirement("21 CFR 11.50")
def test_calibration_signed_and_status_with_the_clock(shop: Shop, login) -> None:
    _register(login, shop)
    api = login(shop.operator)
    response = api.post("/api/v1/equipment/BSC-01/events",
                        json={"kind": "calibrated", "signature": sig()})
    assert response.status_code == 201, response.get_json()
    event = response.get_json()
    assert event["signature"]["meaning"] == "performed"
    assert event["signature"]["username"] == shop.operator.username
    valid_until = clock.now() + timedelta(days=180)
    assert event["valid_until"].startswith(valid_until.strftime("%Y-%m-%dT%H:%M"))
    got = api.get("/api/v1/equipment/BSC-01").get_json()
    assert got["status"] == "in_service" and got["reasons"] == []
    clock.advance(timedelta(days=180))
    # Half a year on, tokens have expired: the services answer what the API would.
    view = shop.view("BSC-01")
    assert view.status == "calibration_overdue"
    assert [r["code"] for r in view.reasons] == ["calibration_overdue"]
    # An explicit validity.
    until = clock.now() + timedelta(days=30)
    shop.event("BSC-01", "calibrated", valid_until=until)
    view = shop.view("BSC-01")
    assert view.status == "in_service" and view.calibration_valid_until == until


def test_event_refusals(shop: Shop, login) -> None:
    _register(login, shop)
    api = login(shop.operator)
    post = lambda body: api.post("/api/v1/equipment/BSC-01/events", json=body)  # noqa: E731
    assert_problem(post({"kind": "out_of_service", "signature": sig()}), 422)
    assert_problem(post({"kind": "returned_to_service", "signature": sig()}), 409,
                   "invalid_transition")
    assert_problem(post({"kind": "cleaned", "valid_until": "2030-01-01T00:00:00Z",
                         "signature": sig()}), 422)
    assert_problem(post({"kind": "calibrated", "valid_until": "2001-01-01T00:00:00Z",
                         "signature": sig()}), 422)
    assert_problem(post({"kind": "polished", "signature": sig()}), 422)
    assert_problem(post({"kind": "cleaned", "signature": sig(password="wrong")}), 401,
                   "signature_rejected")
    assert_problem(post({"kind": "cleaned", "signature": sig("approved")}), 422)
    assert_problem(post({"kind": "cleaned"}), 422)
    assert_problem(login(shop.admin).post("/api/v1/equipment/NOPE/events",
                                          json={"kind": "cleaned", "signature": sig()}), 404)
    shop.register("CNT-01", "cell_counter")  # no interval: a calibration needs a validity
    problem = assert_problem(api.post("/api/v1/equipment/CNT-01/events", json={
        "kind": "calibrated", "signature": sig()}), 422)
    assert "valid_until" in problem["errors"]
    with shop.db.engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM equipment_event")).scalar() == 0


def test_service_transitions(shop: Shop, login) -> None:
    _register(login, shop)
    api = login(shop.qa)
    post = lambda kind, **kw: api.post(  # noqa: E731
        "/api/v1/equipment/BSC-01/events", json={"kind": kind, "signature": sig(), **kw})
    assert post("calibrated").status_code == 201
    assert post("out_of_service", reason="fan alarm").status_code == 201
    got = api.get("/api/v1/equipment/BSC-01").get_json()
    assert got["status"] == "out_of_service" and got["out_of_service_reason"] == "fan alarm"
    assert_problem(post("out_of_service", reason="again"), 409, "invalid_transition")
    assert post("maintained").status_code == 201  # fixed while out of service
    assert post("returned_to_service").status_code == 201
    assert_problem(post("returned_to_service"), 409, "invalid_transition")
    got = api.get("/api/v1/equipment/BSC-01").get_json()
    assert got["status"] == "in_service"
    assert [e["kind"] for e in got["events"]] == [
        "returned_to_service", "maintained", "out_of_service", "calibrated"]


def test_out_of_service_wins_over_calibration_overdue(shop: Shop, login) -> None:
    _register(login, shop)
    api = login(shop.operator)
    api.post("/api/v1/equipment/BSC-01/events",
             json={"kind": "out_of_service", "reason": "moved", "signature": sig()})
    got = api.get("/api/v1/equipment/BSC-01").get_json()
    assert got["status"] == "out_of_service"
    assert [r["code"] for r in got["reasons"]] == ["equipment_out_of_service",
                                                   "calibration_overdue"]


@pytest.mark.requirement("21 CFR 211.182")
def test_logbook_pages_by_key_newest_first(shop: Shop, login) -> None:
    shop.register("INC-01", "incubator")
    for _ in range(5):
        clock.advance(timedelta(minutes=1))
        shop.event("INC-01", "cleaned")
    for record in range(3):
        shop.check("B1", needs=("incubator",), given=("INC-01",), apply_record=record + 1)
    api = login(shop.operator)
    page = api.get("/api/v1/equipment/INC-01?events_limit=2&uses_limit=2").get_json()
    assert len(page["events"]) == 2 and page["events_older"] is not None
    assert page["events"][0]["id"] > page["events"][1]["id"]
    assert [u["step_record_id"] for u in page["uses"]] == [3, 2]
    older = api.get(f"/api/v1/equipment/INC-01?events_limit=2&events_before="
                    f"{page['events_older']}&uses_before={page['uses_older']}").get_json()
    assert len(older["events"]) == 2 and [u["step_record_id"] for u in older["uses"]] == [1]
    last = api.get(f"/api/v1/equipment/INC-01?events_limit=2&events_before="
                   f"{older['events_older']}").get_json()
    assert len(last["events"]) == 1 and last["events_older"] is None


@pytest.mark.requirement("21 CFR 211.182")
@pytest.mark.requirement("EU GMP Annex 11 §9")
def test_logbook_and_use_log_are_append_only_in_the_database(shop: Shop, db) -> None:
    shop.register("INC-01", "incubator")
    shop.event("INC-01", "cleaned")
    shop.check("B1", needs=("incubator",), given=("INC-01",), apply_record=1)
    for statement in ("UPDATE equipment_event SET reason = 'x'",
                      "DELETE FROM equipment_event",
                      "UPDATE equipment_use SET batch_number = 'B2'",
                      "DELETE FROM equipment_use",
                      "DELETE FROM equipment"):
        with pytest.raises(sqlalchemy.exc.DatabaseError), db.engine.begin() as c:
            c.execute(text(statement))


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_events_and_uses_are_audited(shop: Shop, db) -> None:
    shop.register("INC-01", "incubator")
    shop.event("INC-01", "cleaned")
    shop.check("B1", needs=("incubator",), given=("INC-01",), apply_record=9)
    assert audit_events(db, entity_type="equipment", entity_id="INC-01")
    assert audit_events(db, entity_type="equipment_event")
    assert audit_events(db, entity_type="equipment_use", entity_id="INC-01:B1:9")


def _alerts(shop: Shop) -> list[tuple[str, str]]:
    with shop.db.engine.connect() as c:
        return [tuple(r) for r in c.execute(text(
            "SELECT cause, status FROM alert WHERE subject_type = 'equipment' ORDER BY id"))]


def test_a_calibration_acknowledges_its_open_alerts(shop: Shop) -> None:
    from equipment import sweep

    shop.register("INC-01", "incubator", interval="P30D")
    with shop.tx() as s:
        assert sweep.sweep(s) == ["equipment calibration_overdue:INC-01:-"]
    shop.event("INC-01", "calibrated")
    assert _alerts(shop) == [("calibration_overdue:INC-01:-", "acknowledged")]
