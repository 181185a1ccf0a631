"""CART-AUTO v2: the bag labels are checked after the fill created the bags (issue 15).

The label_check step (``scans = "final_product"``) has every final-product bag of the
batch scanned and matched before it can be signed; the scans are stored with the step
record and signed with it."""

from __future__ import annotations

import html as html_
import json
from typing import Any

import pytest
from sqlalchemy import select

from gmp_mes import signatures
from gmp_mes.errors import DomainError
from processes.definitions import ProcessDefinitionError, parse_definition
from tests.conftest import sig
from tests.helpers import assert_problem, count
from tests.test_batches_export import pdf_text
from tests.test_batches_fixtures import Plant, good_values, plant_fixture  # noqa: F401
from tests.test_pages_core import csrf_from, page_login


def filled(plant: Plant, bags: int = 2) -> str:
    """A v2 batch recorded up to and including the fill (``bags`` bags created)."""
    number = plant.start()
    definition = plant.definition(number)
    assert definition.version == 2
    for step in definition.steps:
        values = good_values(step)
        if step.creates:
            values["bags"] = bags
        plant.record(number, step.code, values)
        if step.creates:
            return number
    raise AssertionError("no fill step")


def label_check_body(plant: Plant, scans: list[str]) -> dict[str, Any]:
    return {"values": {}, "signature": sig(), "scans": scans,
            "verifier": {"username": plant.operator2.username,
                         "password": plant.operator2.password}}


@pytest.fixture(name="v2")
def v2_fixture(plant: Plant) -> Plant:
    plant.approve(2)
    return plant


def test_v2_fill_no_longer_asks_for_labels_and_label_check_follows_it(v2: Plant) -> None:
    number = v2.start()
    definition = v2.definition(number)
    fill = definition.step("fill")
    assert fill.parameter("labels_verified") is None
    check = definition.step("label_check")
    assert (check.index, check.scans, check.critical) == (fill.index + 1, "final_product", True)
    # The batch already running on v1 keeps v1 (its fill still asks the old question).
    assert v2.definition().version == 1
    assert v2.definition().step("fill").parameter("labels_verified") is not None


@pytest.mark.requirement("EU GMP Part IV 9")
@pytest.mark.requirement("autologous rule")
def test_label_check_refused_until_every_bag_is_scanned_then_signed_with_the_scans(
    v2: Plant, login
) -> None:
    from batches import services
    from batches.models import StepRecord
    from identity.models import CustodyEvent

    number = filled(v2, bags=3)
    bags = v2.bag_labels(number)
    api = login(v2.operator)
    path = f"/api/v1/batches/{number}/steps/label_check"
    with v2.tx() as s:
        ids = services.final_product_item_ids(s, number)
    problem = assert_problem(api.post(path, json=label_check_body(v2, [])), 409,
                             "bags_not_scanned")
    assert problem["missing"] == ids
    problem = assert_problem(api.post(path, json=label_check_body(v2, bags[:2])), 409,
                             "bags_not_scanned")
    assert problem["missing"] == ids[2:] and ids[2] in problem["detail"]
    # The same bag twice does not count as two bags.
    assert_problem(api.post(path, json=label_check_body(v2, [bags[0], bags[0], bags[1]])),
                   422, "validation_error")
    # The batch's starting material (consumed by now) is no bag: refused with its code.
    with v2.tx() as s:
        starting = services.get_batch(s, number).starting_item_id
    from labels import services as labels

    with v2.tx() as s:
        sm_label = labels.payload_for_item(s, starting)
    assert_problem(api.post(path, json=label_check_body(v2, [*bags, sm_label])), 409,
                   "status_final")
    # Nothing recorded by the refusals: every step up to the fill (expansion once).
    assert count(v2.db, "step_record") == len(v2.definition(number).steps) - 2
    done = api.post(path, json=label_check_body(v2, list(reversed(bags))))
    assert done.status_code == 201, done.get_json()
    recorded = done.get_json()["record"]["scans"]
    assert sorted(r["item_id"] for r in recorded) == sorted(ids)
    assert {r["coi_id"] for r in recorded} == {v2.batch(number).coi_id}
    assert {r["kind"] for r in recorded} == {"final_product"}
    with v2.tx() as s:
        record = s.scalar(select(StepRecord).where(StepRecord.batch_number == number,
                                                   StepRecord.step_code == "label_check"))
        assert services.signature_binds(s, record)
        # The scans are part of what both people signed: without them it no longer binds.
        bare = services.signed_content(record.key, record.values, record.performed_at)
        assert not signatures.still_binds(record.signature, bare)
        assert record.verifier_signature is not None
        assert not signatures.still_binds(record.verifier_signature, bare)
        for scanned in record.scans:
            event = s.get(CustodyEvent, scanned["custody_event_id"])
            assert (event.item_id, event.action, event.ok) == (scanned["item_id"], "scan",
                                                               True)
    # No scans on a step that checks no labels.
    cryo = {"values": good_values(v2.definition(number).step("cryopreservation")),
            "signature": sig(), "scans": bags}
    problem = assert_problem(api.post(f"/api/v1/batches/{number}/steps/cryopreservation",
                                      json=cryo), 422, "validation_error")
    assert "scans" in problem["errors"]
    shown = api.get(f"/api/v1/batches/{number}").get_json()
    step = next(st for st in shown["steps"] if st["code"] == "label_check")
    assert step["scans"] == "final_product" and step["bags"] == ids
    assert len(step["records"][0]["scans"]) == 3
    # The exported record names every bag whose label was scanned.
    exported = api.get(f"/api/v1/batches/{number}/record.json")
    assert exported.status_code == 200
    checked = next(st for st in json.loads(exported.data)["steps"]
                   if st["code"] == "label_check")
    assert sorted(x["item_id"] for x in checked["records"][0]["scans"]) == sorted(ids)
    pdf = pdf_text(api.get(f"/api/v1/batches/{number}/record.pdf").data)
    assert "labels scanned and matched" in pdf and all(i in pdf for i in ids)


@pytest.mark.requirement("autologous rule")
def test_a_bag_of_another_patients_batch_refuses_the_label_check_with_its_code(
    v2: Plant, login
) -> None:
    from identity.models import CustodyEvent

    number = filled(v2, bags=1)
    other = filled(v2, bags=1)
    foreign = v2.bag_labels(other)
    api = login(v2.operator)
    before = count(v2.db, "step_record")
    problem = assert_problem(
        api.post(f"/api/v1/batches/{number}/steps/label_check",
                 json=label_check_body(v2, [*v2.bag_labels(number), *foreign])),
        409, "coi_mismatch")
    assert "coi_mismatch" in [r["code"] for r in problem["reasons"]]
    assert problem["errors"]["scans"]
    assert count(v2.db, "step_record") == before
    # The refused scan is on record all the same (the STOP a scan station would show).
    with v2.tx() as s:
        from batches import services

        foreign_id = services.final_product_item_ids(s, other)[0]
        refused = s.scalars(select(CustodyEvent).where(
            CustodyEvent.item_id == foreign_id, CustodyEvent.action == "scan")).all()
        assert [e.ok for e in refused] == [False]
    # Service level: the same refusal, and the step is still to do.
    with pytest.raises(DomainError) as caught:
        v2.record(number, "label_check", {}, scans=foreign)
    assert caught.value.code == "coi_mismatch"
    v2.record(number, "label_check", {})
    assert v2_next(v2, number) == ["cryopreservation"]


def v2_next(plant: Plant, number: str) -> list[str]:
    from batches import services

    with plant.tx() as s:
        return [st.step.code for st in services.step_states(s, services.get_batch(s, number))
                if st.allowed]


def test_the_batch_page_offers_a_scan_field_listing_the_bags_and_keeps_it(
    v2: Plant, client
) -> None:
    from batches import services

    number = filled(v2, bags=2)
    bags = v2.bag_labels(number)
    with v2.tx() as s:
        ids = services.final_product_item_ids(s, number)
    page_login(client, v2.operator)
    html = client.get(f"/batches/{number}").get_data(as_text=True)
    assert 'name="scans"' in html and "<textarea" in html and "Bags to scan (2)" in html
    assert all(f"<li>{i}</li>" in html for i in ids)
    form = {"csrf_token": csrf_from(html), "password": v2.operator.password,
            "meaning": "performed", "verifier_username": v2.operator2.username,
            "verifier_password": v2.operator2.password}
    # One bag scanned (the wedge scanner ends it with Enter): refused, the scan kept.
    posted = client.post(f"/batches/{number}/steps/label_check",
                         data={**form, "scans": bags[0] + "\r\n"})
    assert posted.status_code == 409
    again = html_.unescape(posted.get_data(as_text=True))
    assert f"still to scan {ids[1]}" in again and "data-focus" in again
    assert bags[0] in again and 'aria-invalid="true"' in again
    assert v2.operator.password not in again
    posted = client.post(f"/batches/{number}/steps/label_check",
                         data={**form, "scans": f"{bags[0]}\r\n\r\n{bags[1]}\r\n"})
    assert posted.status_code == 302, posted.get_data(as_text=True)
    shown = html_.unescape(client.get(f"/batches/{number}").get_data(as_text=True))
    assert "Labels scanned:" in shown and all(i in shown for i in ids)
    assert v2_next(v2, number) == ["cryopreservation"]


def _definition(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"code": "X-1", "version": 1, "name": "x",
            "shelf_life": {"starting_material": "PT48H", "final_product": "P30D"},
            "steps": steps}


@pytest.mark.parametrize(("steps", "field", "message"), [
    ([{"code": "fill", "name": "f", "creates": "final_product", "expiry_from": True,
       "scans": "final_product"}], "steps[0] (fill).scans", "cannot check"),
    ([{"code": "check", "name": "c", "scans": "final_product"},
      {"code": "fill", "name": "f", "creates": "final_product", "expiry_from": True}],
     "steps[0] (check).scans", "no step before it creates"),
    ([{"code": "fill", "name": "f", "creates": "final_product", "expiry_from": True},
      {"code": "check", "name": "c", "scans": "bags"}], "steps[1] (check).scans",
     "must be one of: final_product"),
    ([{"code": "fill", "name": "f", "creates": "final_product", "expiry_from": True},
      {"code": "check", "name": "c", "scans": "final_product", "repeatable": True}],
     "steps[1] (check).scans", "runs once"),
])
def test_the_definition_parser_validates_scans(steps, field, message) -> None:
    with pytest.raises(ProcessDefinitionError) as caught:
        parse_definition(_definition(steps), "test.toml")
    assert any(name == field and message in text for name, text in caught.value.errors), \
        caught.value.errors


def test_scans_is_stored_only_when_declared() -> None:
    fill = {"code": "fill", "name": "f", "creates": "final_product", "expiry_from": True}
    plain = parse_definition(_definition([fill]), "a.toml")
    assert "scans" not in plain.raw["steps"][0]
    checked = parse_definition(_definition([fill, {"code": "check", "name": "c",
                                                   "scans": "final_product"}]), "b.toml")
    assert checked.raw["steps"][1]["scans"] == "final_product"
    from processes.definitions import from_canonical

    assert from_canonical(checked.raw).step("check").scans == "final_product"
