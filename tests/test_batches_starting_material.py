"""Starting material in process (issue 13): from batch start until the step that consumes
it, the starting material is ``in_process`` for its batch, scans OK against that batch and
STOP against any other; a batch starts only from material received at its manufacturing
site; the Start batch field takes a scanned label; the receipt's identity check can be
done by scanning the bag, recorded with the step."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import processes.services as processes
from gmp_mes.clock import clock, utcnow
from gmp_mes.errors import Conflict, InvalidTransition
from gmp_mes.settings import CONFIG_DIR
from tests.conftest import sig
from tests.helpers import assert_problem, count
from tests.test_batches_fixtures import PLANT, Plant, good_values, plant_fixture  # noqa: F401


def item(plant: Plant, item_id: str) -> Any:
    from identity import services as identity

    with plant.tx() as s:
        found = identity.get_item(s, item_id)
        s.expunge(found)
        return found


def label(plant: Plant, item_id: str) -> str:
    from labels import services as labels

    with plant.tx() as s:
        return labels.payload_for_item(s, item_id)


def scan(api: Any, payload: str, batch_number: str | None = None) -> dict[str, Any]:
    response = api.post("/api/v1/scans", json={"payload": payload, "workstation": "CR-WS1",
                                               "batch_number": batch_number})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def codes(result: dict[str, Any]) -> list[str]:
    return [r["code"] for r in result["reasons"]]


def receipt_body(plant: Plant, number: str, **extra: Any) -> dict[str, Any]:
    step = plant.definition(number).step("receipt")
    return {"values": good_values(step), "signature": sig(),
            "verifier": {"username": plant.operator2.username,
                         "password": plant.operator2.password}, **extra}


@pytest.mark.requirement("SPEC §2 (item status in_process)")
def test_starting_material_scans_ok_against_its_own_batch_and_stop_against_another(
    plant: Plant, login
) -> None:
    api = login(plant.operator)
    sm = plant.starting_material()
    number = plant.start(sm)
    started = item(plant, sm)
    assert (started.status, started.batch_number) == ("in_process", number)
    payload = label(plant, sm)
    # The receipt step ("Scan the bag"): OK against its own batch, status shown.
    own = scan(api, payload, number)
    assert own["ok"] is True and own["reasons"] == [] and own["status"] == "in_process"
    # Without a batch, the scan still shows what the bag is and where it belongs.
    plain = scan(api, payload)
    assert plain["ok"] is True and plain["status"] == "in_process"
    assert plain["item"]["batch_number"] == number
    # Another patient's batch: STOP, wrong patient.
    other = plant.start()
    assert (result := scan(api, payload, other))["ok"] is False
    assert codes(result) == ["coi_mismatch"]


def test_starting_material_is_stop_against_another_batch_of_the_same_patient(
    plant: Plant, login
) -> None:
    from identity import services as identity

    api = login(plant.operator)
    first = plant.starting_material()
    number = plant.start(first)
    coi_id = item(plant, first).coi_id
    with plant.tx() as s:  # a second collection of the same patient, its own batch
        second = identity.record_collection(s, coi_id=coi_id, collected_at=utcnow()
                                            - timedelta(hours=1), site="APH1",
                                            volume_ml=180.0).item_id
    plant.ship_and_receive(second)
    second_batch = plant.start(second)
    result = scan(api, label(plant, first), second_batch)
    assert result["ok"] is False and codes(result) == ["wrong_batch"]
    assert number in result["reasons"][0]["message"]
    # ... and the second batch's own material is OK against it.
    assert scan(api, label(plant, second), second_batch)["ok"] is True
    # A received bag that started no batch yet is not material of a running batch.
    spare = plant.starting_material()
    assert codes(scan(api, label(plant, spare), number)) == ["coi_mismatch"]


@pytest.mark.requirement("SPEC §2 (item status consumed)")
def test_the_consuming_step_ends_in_process_and_the_bag_then_scans_stop(
    plant: Plant, login
) -> None:
    api = login(plant.operator)
    sm = plant.starting_material()
    number = plant.start(sm)
    definition = plant.definition(number)
    assert definition.consuming_step.code == "selection"  # default: first after receipt
    plant.record(number, "receipt")
    assert item(plant, sm).status == "in_process"
    plant.record(number, "selection")
    assert item(plant, sm).status == "consumed"
    result = scan(api, label(plant, sm), number)
    assert result["ok"] is False and "status_final" in codes(result)
    # A second batch can never start from it.
    with pytest.raises((Conflict, InvalidTransition)), plant.tx() as s:
        from batches import services

        services.start_batch(s, item_id=sm, user_id=plant.operator.user_id)


@pytest.mark.requirement("SPEC §3 hold time")
def test_hold_time_ends_at_batch_start(plant: Plant, login) -> None:
    from identity.sweep import sweep

    sm = plant.starting_material(collected_hours_ago=47)
    number = plant.start(sm)
    clock.freeze(utcnow() + timedelta(days=3))  # long past collection + PT48H
    api = login(plant.operator)
    with plant.tx() as s:
        assert sweep(s).expired == []
    assert item(plant, sm).status == "in_process"
    assert scan(api, label(plant, sm), number)["ok"] is True


@pytest.mark.requirement("SPEC §7 (POST /batches)")
@pytest.mark.requirement("21 CFR 11.10(f)")
def test_batch_start_refused_before_receipt_at_the_manufacturing_site(
    plant: Plant, login, make_site, make_user
) -> None:
    from gmp_mes.models import User
    from identity import services as identity

    api = login(plant.operator)
    # Still at the apheresis site.
    at_collection = plant.starting_material(received=False)
    problem = assert_problem(api.post("/api/v1/batches", json={"item_id": at_collection}),
                             409, "not_received")
    assert "APH1" in problem["detail"]
    # In transit to the plant.
    assert plant.apheresis is not None
    with plant.tx(plant.apheresis) as s:
        identity.record_custody(s, at_collection, action="ship", site=PLANT,
                                user=s.get(User, plant.apheresis.user_id))
    assert_problem(api.post("/api/v1/batches", json={"item_id": at_collection}), 409,
                   "not_received")
    # Received, but at another manufacturing site than the operator's.
    make_site("CLEAN2", "manufacturing")
    elsewhere_op = make_user("otto2", "operator", site="CLEAN2")
    elsewhere = plant.starting_material(received=False)
    with plant.tx() as s:
        identity.record_custody(s, at_collection, action="receive", site=PLANT,
                                user=s.get(User, plant.operator.user_id))
    with plant.tx(plant.apheresis) as s:
        identity.record_custody(s, elsewhere, action="ship", site="CLEAN2",
                                user=s.get(User, plant.apheresis.user_id))
    with plant.tx(elsewhere_op) as s:
        identity.record_custody(s, elsewhere, action="receive", site="CLEAN2",
                                user=s.get(User, elsewhere_op.user_id))
    assert_problem(api.post("/api/v1/batches", json={"item_id": elsewhere}), 409,
                   "not_received")
    assert count(plant.db, "batch") == 0
    # Received here: the batch starts.
    started = api.post("/api/v1/batches", json={"item_id": at_collection})
    assert started.status_code == 201, started.get_json()
    # The other site's operator starts from the bag received there.
    assert login(elsewhere_op).post("/api/v1/batches",
                                    json={"item_id": elsewhere}).status_code == 201


def test_start_batch_takes_a_scanned_label_and_verifies_it(plant: Plant, login) -> None:
    api = login(plant.operator)
    sm = plant.starting_material()
    payload = label(plant, sm)
    head, _, signature = payload.rpartition(":")
    forged = f"{head}:{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    assert_problem(api.post("/api/v1/batches", json={"item_id": forged}), 409,
                   "bad_signature")
    assert count(plant.db, "batch") == 0
    started = api.post("/api/v1/batches", json={"item_id": payload.lower() + "\r\n"})
    assert started.status_code == 201, started.get_json()
    assert started.get_json()["starting_item_id"] == sm


@pytest.mark.requirement("21 CFR 11.70")
def test_receipt_identity_check_by_scanning_the_bag_is_recorded_with_the_step(
    plant: Plant, login
) -> None:
    from batches import services
    from batches.models import StepRecord
    from identity.models import CustodyEvent

    api = login(plant.operator)
    sm = plant.starting_material()
    number = plant.start(sm)
    other_patient = plant.starting_material()
    path = f"/api/v1/batches/{number}/steps/receipt"
    # Another patient's bag: refused, nothing recorded, but the STOP scan is on record.
    problem = assert_problem(
        api.post(path, json=receipt_body(plant, number, scan=label(plant, other_patient))),
        409, "coi_mismatch")
    assert [r["code"] for r in problem["reasons"]] == ["coi_mismatch"]
    assert count(plant.db, "step_record") == 0
    with plant.tx() as s:
        refused = s.scalars(select(CustodyEvent).where(
            CustodyEvent.item_id == other_patient, CustodyEvent.action == "scan")).all()
        assert [e.ok for e in refused] == [False]
    # The bag of this batch: recorded, the scan part of what was signed.
    done = api.post(path, json=receipt_body(plant, number, scan=label(plant, sm)))
    assert done.status_code == 201, done.get_json()
    recorded = done.get_json()["record"]["scan"]
    assert recorded["item_id"] == sm and recorded["status"] == "in_process"
    with plant.tx() as s:
        record = s.scalar(select(StepRecord).where(StepRecord.batch_number == number))
        assert services.signature_binds(s, record)
        event = s.get(CustodyEvent, recorded["custody_event_id"])
        assert (event.item_id, event.action, event.ok) == (sm, "scan", True)
    shown = api.get(f"/api/v1/batches/{number}").get_json()
    assert shown["steps"][0]["records"][0]["scan"]["item_id"] == sm


def test_a_declared_consuming_step_keeps_the_material_in_process_until_it(
    plant: Plant, tmp_path: Path
) -> None:
    from batches import services

    text = (CONFIG_DIR / "processes" / "cart-auto-v1.toml").read_text()
    text = text.replace('code = "CART-AUTO"', 'code = "CART-LATE"', 1).replace(
        'code = "activation"\n', 'code = "activation"\nconsumes = "starting_material"\n', 1)
    (tmp_path / "late.toml").write_text(text)
    with plant.tx(plant.qa) as s:
        processes.load_process_definitions(s, [tmp_path])
    with plant.tx(plant.qa) as s:
        processes.approve_process(s, "CART-LATE", 1, user_id=plant.qa.user_id,
                                 signature=sig_input("approved"))
    sm = plant.starting_material()
    with plant.tx() as s:
        number = services.start_batch(s, item_id=sm, user_id=plant.operator.user_id,
                                      process_code="CART-LATE").batch_number
    assert plant.definition(number).consuming_step.code == "activation"
    plant.run_to(number, "selection")
    assert item(plant, sm).status == "in_process"
    plant.record(number, "activation")
    assert item(plant, sm).status == "consumed"


def sig_input(meaning: str) -> Any:
    from gmp_mes.signatures import SignatureInput
    from tests.conftest import PASSWORD

    return SignatureInput(password=PASSWORD, meaning=meaning)


def test_consumes_is_validated_and_leaves_the_shipped_digest_alone(tmp_path: Path) -> None:
    from processes.definitions import ProcessDefinitionError, load_file

    shipped = CONFIG_DIR / "processes" / "cart-auto-v1.toml"
    definition = load_file(shipped)
    assert all("consumes" not in step for step in definition.raw["steps"])
    assert definition.consuming_step.code == "selection"
    bad = tmp_path / "bad.toml"
    shutil.copy(shipped, bad)
    bad.write_text(bad.read_text().replace(
        'code = "selection"\n', 'code = "selection"\nconsumes = "vector"\n', 1).replace(
        'code = "harvest"\n', 'code = "harvest"\nconsumes = "starting_material"\n', 1))
    with pytest.raises(ProcessDefinitionError) as caught:
        load_file(bad)
    assert "consumes" in str(caught.value)
    two = tmp_path / "two.toml"
    shutil.copy(shipped, two)
    two.write_text(two.read_text().replace(
        'code = "selection"\n', 'code = "selection"\nconsumes = "starting_material"\n', 1)
        .replace('code = "harvest"\n', 'code = "harvest"\nconsumes = "starting_material"\n', 1))
    with pytest.raises(ProcessDefinitionError, match="only one step may consume"):
        load_file(two)
