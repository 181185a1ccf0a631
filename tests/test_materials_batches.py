"""Materials at the step, end to end (SPEC §11) with CART-AUTO v3 over the API: the dry
run and the step name an expired lot before anyone signs, a released lot is consumed with
the step, the scanned lot label works wherever a lot id does, and the batch record (page,
PDF, JSON) and the recall show the lots used. Equipment is checked by its own domain; a
provider that accepts every piece stands in for it here."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.orm import Session

from gmp_mes import registry
from gmp_mes.clock import clock, utcnow
from gmp_mes.registry import StepCheck, StepContext
from tests.conftest import sig
from tests.helpers import assert_problem, count
from tests.test_batches_export import pdf_text
from tests.test_batches_fixtures import Plant, good_values, plant_fixture  # noqa: F401
from tests.test_pages_core import page_login

pytestmark = pytest.mark.requirement("Regulation (EC) 1394/2007 Art. 15")

MATERIALS = {"CD4CD8-BEADS": "vial", "TS-520": "set", "TRANSACT": "mL", "TEXMACS": "mL",
             "IL7": "vial", "IL15": "vial", "LV-CD19": "mL", "CS10": "mL"}


def any_equipment(session: Session, ctx: StepContext) -> StepCheck:
    return StepCheck(signed=[{"label": e} for e in ctx.given.equipment])


@pytest.fixture(name="v3")
def v3_fixture(plant: Plant) -> Iterator[Plant]:
    from materials import services

    clock.freeze(utcnow())
    plant.approve(3)
    with plant.tx(plant.qa) as s:
        for code, unit in MATERIALS.items():
            services.create_material(s, code=code, name=code.title(), kind="reagent",
                                     unit=unit, user_id=plant.qa.user_id)
    with registry.step_requirements.only({"materials": services.check_step_materials,
                                          "equipment": any_equipment}):
        yield plant


def lot(plant: Plant, code: str, quantity: Any = 10, *,
        expires_in: timedelta = timedelta(days=200)) -> str:
    from materials import services
    from tests.test_materials_fixtures import signed

    with plant.tx(plant.operator) as s:
        lot_id = services.receive_lot(s, code, supplier="Miltenyi", supplier_lot=f"{code}-1",
                                      expires_at=utcnow() + expires_in, quantity=quantity,
                                      user_id=plant.operator.user_id).lot_id
    with plant.tx(plant.qa) as s:
        services.release_lot(s, lot_id, user_id=plant.qa.user_id, signature=signed("released"))
    return lot_id


def _selection(plant: Plant, api: Any, number: str, lots: list[dict[str, Any]],
               check: bool = False) -> Any:
    step = plant.definition(number).step("selection")
    body = {"values": good_values(step), "signature": sig(), "materials": lots,
            "equipment": ["CPS-01"]}
    path = f"/api/v1/batches/{number}/steps/selection" + ("/check" if check else "")
    return api.post(path, json=body)


def test_an_expired_lot_is_refused_before_signing_then_a_released_lot_is_used(
        v3: Plant, login: Any) -> None:
    beads = lot(v3, "CD4CD8-BEADS", 4)
    old_set = lot(v3, "TS-520", 2, expires_in=timedelta(hours=1))
    number = v3.start()
    v3.record(number, "receipt")
    clock.advance(timedelta(hours=2))  # the tubing set's lot expired meanwhile
    api = login(v3.operator)
    given = [{"lot_id": beads}, {"lot_id": old_set}]
    dry = _selection(v3, api, number, given, check=True)
    assert dry.status_code == 200, dry.get_json()
    assert dry.get_json()["ok"] is False
    assert [r["code"] for r in dry.get_json()["reasons"]] == ["lot_expired"]
    refused = _selection(v3, api, number, given)
    body = assert_problem(refused, 409, "lot_expired")
    assert [r["code"] for r in body["reasons"]] == ["lot_expired"]
    assert count(v3.db, "lot_use") == 0

    new_set = lot(v3, "TS-520", 2)
    done = _selection(v3, api, number, [{"lot_id": beads}, {"lot_id": new_set}])
    assert done.status_code == 201, done.get_json()
    assert api.get(f"/api/v1/lots/{beads}").get_json()["remaining"] == "3"
    uses = api.get(f"/api/v1/lots/{new_set}").get_json()["uses"]
    assert [(u["batch_number"], u["step_code"], u["quantity"], u["used_by"])
            for u in uses] == [(number, "selection", "1", v3.operator.username)]
    record = api.get(f"/api/v1/batches/{number}").get_json()
    selection = next(s for s in record["steps"] if s["code"] == "selection")
    signed = selection["records"][0]["resources"]["materials"]
    assert [(m["lot_id"], m["quantity"]) for m in signed] == [(beads, "1"), (new_set, "1")]
    recall = api.get(f"/api/v1/lots/{new_set}/where-used").get_json()
    assert [b["batch_number"] for b in recall["batches"]] == [number]


def test_lots_scanned_and_typed_quantities_at_activation_and_the_record(
        v3: Plant, login: Any, client: Any) -> None:
    from labels import services as labels
    from materials import services

    lots = {code: lot(v3, code, 500 if MATERIALS[code] == "mL" else 5) for code in MATERIALS}
    number = v3.start()
    v3.record(number, "receipt")
    api = login(v3.operator)
    assert _selection(v3, api, number, [{"lot_id": lots["CD4CD8-BEADS"]},
                                        {"lot_id": lots["TS-520"]}]).status_code == 201
    with v3.tx() as s:
        medium_label = services.print_lot_label(
            s, services.lot_label_subject(s, lots["TEXMACS"], for_update=True),
            labels.PrintRequest(format="png"), user_id=v3.operator.user_id).payloads[0]
    step = v3.definition(number).step("activation")
    body = {"values": good_values(step), "signature": sig(), "equipment": ["CPS-01", "BSC-1"],
            "materials": [{"lot_id": lots["TRANSACT"], "quantity": 2.5},
                          {"lot_id": medium_label + "\r\n", "quantity": 70},
                          {"lot_id": lots["IL7"]}, {"lot_id": lots["IL15"]}]}
    missing = api.post(f"/api/v1/batches/{number}/steps/activation",
                       json={**body, "materials": [{"lot_id": lots["TRANSACT"]},
                                                   *body["materials"][1:]]})
    assert_problem(missing, 409, "quantity_missing")
    done = api.post(f"/api/v1/batches/{number}/steps/activation", json=body)
    assert done.status_code == 201, done.get_json()
    assert v3_remaining(v3, lots["TEXMACS"]) == Decimal("430")
    assert v3_remaining(v3, lots["TRANSACT"]) == Decimal("497.5")

    exported = login(v3.qa).get(f"/api/v1/batches/{number}/record.json").get_json()
    assert [(m["step_code"], m["lot_id"], m["quantity"]) for m in exported["materials"]] == [
        ("selection", lots["CD4CD8-BEADS"], "1"), ("selection", lots["TS-520"], "1"),
        ("activation", lots["TRANSACT"], "2.5"), ("activation", lots["TEXMACS"], "70"),
        ("activation", lots["IL7"], "1"), ("activation", lots["IL15"], "1")]
    pdf = " ".join(pdf_text(login(v3.qa).get(
        f"/api/v1/batches/{number}/record.pdf").data).split())
    assert "Material lots used" in pdf and lots["TEXMACS"] in pdf
    page_login(client, v3.qa)
    page = client.get(f"/batches/{number}").get_data(as_text=True)
    assert "Material lots used" in page and f"<td>{lots['IL15']}</td>" in page


def v3_remaining(plant: Plant, lot_id: str) -> Decimal:
    from materials import services

    with plant.tx() as s:
        return services.get_lot(s, lot_id).remaining


def test_the_step_form_shows_an_expired_lot_before_signing_then_records_a_released_one(
        v3: Plant, client: Any) -> None:
    """The operator scans the lots into the step form: the check names the expired lot
    (nothing recorded, what was typed kept), then the step signs with a released lot."""
    from tests.test_pages_core import csrf_from

    beads = lot(v3, "CD4CD8-BEADS", 4)
    old_set = lot(v3, "TS-520", 2, expires_in=timedelta(hours=1))
    number = v3.start()
    v3.record(number, "receipt")
    clock.advance(timedelta(hours=2))
    page_login(client, v3.operator)
    page = client.get(f"/batches/{number}").get_data(as_text=True)
    step = v3.definition(number).step("selection")
    form = {"csrf_token": csrf_from(page), "lot_0": beads, "lot_1": old_set,
            "eqp_0": "CPS-01", "check": "1",
            **{f"v_{k}": str(v) for k, v in good_values(step).items()}}
    checked = client.post(f"/batches/{number}/steps/selection", data=form)
    text = checked.get_data(as_text=True)
    assert checked.status_code == 200 and "This step would be refused" in text
    assert f"lot {old_set} (TS-520) expired" in text and f'value="{old_set}"' in text
    assert count(v3.db, "lot_use") == 0
    form.pop("check")
    form.update(password=v3.operator.password, lot_1=lot(v3, "TS-520", 2))
    done = client.post(f"/batches/{number}/steps/selection", data=form)
    assert done.status_code == 302, done.get_data(as_text=True)[:500]
    assert count(v3.db, "lot_use") == 2
    assert v3_remaining(v3, beads) == Decimal("3")
