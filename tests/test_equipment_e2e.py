"""Equipment at the steps of CART-AUTO v3, end to end through batches (SPEC §11): the dry
run lists the equipment reasons, the step is refused with them (409, first code, every
reason), a scanned EQP label is accepted, the use is logged and the batch record lists it;
a cleaning-required cabinet used by one batch is refused to the next until cleaned.

Materials are another domain's provider: a stand-in that accepts stands for it here."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import zxingcpp
from PIL import Image
from sqlalchemy.orm import Session

from equipment import services
from gmp_mes import registry
from gmp_mes.clock import clock
from gmp_mes.errors import DomainError
from gmp_mes.registry import StepCheck, StepContext, StepResources
from gmp_mes.signatures import SignatureInput
from tests.conftest import PASSWORD, Person, sig
from tests.helpers import assert_problem, trail_time
from tests.test_batches_fixtures import Plant, good_values, plant_fixture, sign  # noqa: F401
from tests.test_pages_core import page_login

pytestmark = pytest.mark.requirement("21 CFR 211.182")


def _materials_accepted(session: Session, context: StepContext) -> StepCheck:
    return StepCheck(signed=[])


@pytest.fixture(name="v3")
def v3_fixture(plant: Plant, make_user: Any) -> Iterator[tuple[Plant, Person]]:
    plant.approve(3)
    admin = make_user("adam", "admin")
    clock.freeze(trail_time(plant.db) + timedelta(seconds=1))
    with registry.step_requirements.only({"materials": _materials_accepted,
                                          "equipment": services.check_step_equipment}):
        yield plant, admin


def _register(plant: Plant, admin: Person, equipment_id: str, type_: str, **kw: Any) -> None:
    with plant.tx(admin) as s:
        services.register_equipment(s, equipment_id=equipment_id, type=type_,
                                    name=f"Unit {equipment_id}", site_code="CLEAN1",
                                    user_id=admin.user_id, **kw)


def _event(plant: Plant, equipment_id: str, kind: str, **kw: Any) -> None:
    clock.advance(timedelta(minutes=1))
    with plant.tx() as s:
        services.record_event(s, equipment_id, kind=kind, user_id=plant.operator.user_id,
                              signature=SignatureInput(PASSWORD, "performed"), **kw)


def _record(plant: Plant, number: str, step: str, equipment: tuple[str, ...]) -> Any:
    from batches import services as batches

    clock.advance(timedelta(minutes=1))
    definition = plant.definition(number).step(step)
    with plant.tx() as s:
        return batches.record_step(
            s, number, step, values=good_values(definition), user_id=plant.operator.user_id,
            signature=sign(), resources=StepResources(equipment=equipment),
            verifier=batches.VerifierInput(plant.operator2.username, PASSWORD)
            if definition.critical else None)


@pytest.mark.requirement("21 CFR 211.68")
def test_check_refuse_scan_record_and_the_batch_record(v3, login, client) -> None:
    plant, admin = v3
    _register(plant, admin, "CPS-01", "closed_processing_system", calibration_interval="P365D")
    number = plant.start()
    plant.record(number, "receipt")
    api = login(plant.operator)
    step = plant.definition(number).step("selection")
    body = {"values": good_values(step), "signature": sig(), "materials": [],
            "equipment": ["CPS-01"]}
    # The dry run shows the reason before anyone signs, and records nothing.
    answer = api.post(f"/api/v1/batches/{number}/steps/selection/check", json=body)
    assert answer.get_json()["ok"] is False
    assert [r["code"] for r in answer.get_json()["reasons"]] == ["calibration_overdue"]
    refused = api.post(f"/api/v1/batches/{number}/steps/selection",
                       json={**body, "equipment": ["CPS-01", "NOPE"]})
    assert_problem(refused, 409, "equipment_unknown")
    assert [r["code"] for r in refused.get_json()["reasons"]] == [
        "equipment_unknown", "calibration_overdue"]
    _event(plant, "CPS-01", "calibrated")
    label = login(admin).get("/api/v1/equipment/CPS-01/label?format=png")
    # Read off the printed label by a real decoder, as the scanner types it.
    (payload,) = [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(label.data)))]
    ok = api.post(f"/api/v1/batches/{number}/steps/selection/check",
                  json={**body, "equipment": [payload]})
    assert ok.get_json() == {"ok": True, "reasons": []}
    recorded = api.post(f"/api/v1/batches/{number}/steps/selection",
                        json={**body, "equipment": [payload]})
    assert recorded.status_code == 201, recorded.get_json()
    used = recorded.get_json()["record"]["resources"]["equipment"]
    assert [(u["equipment_id"], u["type"]) for u in used] == [
        ("CPS-01", "closed_processing_system")]
    assert used[0]["calibration_valid_until"]
    got = api.get("/api/v1/equipment/CPS-01").get_json()
    assert [(u["batch_number"], u["step_code"]) for u in got["uses"]] == [(number, "selection")]
    record = login(plant.qa).get(f"/api/v1/batches/{number}/record.json").get_json()
    assert [(u["equipment_id"], u["step_code"]) for u in record["equipment"]] == [
        ("CPS-01", "selection")]
    page_login(client, plant.qa)
    page = client.get(f"/batches/{number}").get_data(as_text=True)
    assert "Equipment used" in page and "<td>CPS-01</td>" in page


@pytest.mark.requirement("21 CFR 211.67")
def test_a_cabinet_used_by_one_batch_waits_for_a_cleaning_before_the_next(v3) -> None:
    plant, admin = v3
    _register(plant, admin, "CPS-01", "closed_processing_system")
    _register(plant, admin, "CPS-02", "closed_processing_system")
    _register(plant, admin, "BSC-01", "biosafety_cabinet", cleaning_required=True)
    first, second = plant.start(), plant.start()
    for number, system in ((first, "CPS-01"), (second, "CPS-02")):
        plant.record(number, "receipt")
        _record(plant, number, "selection", (system,))
    _record(plant, first, "activation", ("CPS-01", "BSC-01"))
    with pytest.raises(DomainError) as refused:
        _record(plant, second, "activation", ("CPS-02", "BSC-01"))
    assert refused.value.code == "cleaning_required"
    assert first in refused.value.extra["reasons"][0]["message"]
    # The first batch again (its transduction, same cabinet): no cleaning needed.
    _record(plant, first, "transduction", ("BSC-01",))
    _event(plant, "BSC-01", "cleaned")
    _record(plant, second, "activation", ("CPS-02", "BSC-01"))
    with plant.tx() as s:
        uses = services.logbook(s, "BSC-01").uses
    assert [(u.batch_number, u.step_code) for u in uses] == [
        (second, "activation"), (first, "transduction"), (first, "activation")]
