"""What a step needs (SPEC §11), from the batches side: batches asks every
``registry.step_requirements`` provider, refuses with every reason at once, signs what
they answered with the step and applies it in the same transaction; the dry run
(``POST .../check``) records nothing. The providers here are fakes standing in for
materials and equipment (their own tests check the real rules)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from batches.models import StepRecord
from gmp_mes import registry
from gmp_mes.errors import DomainError
from gmp_mes.models import AuditEvent
from gmp_mes.registry import StepCheck, StepContext, StepResources
from tests.conftest import sig
from tests.helpers import assert_problem
from tests.test_batches_export import pdf_text
from tests.test_batches_fixtures import Plant, good_values, plant_fixture, sign  # noqa: F401
from tests.test_pages_core import csrf_from, page_login

pytestmark = pytest.mark.requirement("Regulation (EC) 1394/2007 Art. 15")


@dataclass
class FakeProvider:
    """A provider that refuses with ``reasons`` (when any) and records what it saw."""

    name: str
    reasons: list[dict[str, str]] = field(default_factory=list)
    seen: list[StepContext] = field(default_factory=list)
    applied: list[int] = field(default_factory=list)

    def __call__(self, session: Session, context: StepContext) -> StepCheck:
        self.seen.append(context)
        given = (context.given.materials if self.name == "materials"
                 else context.given.equipment)
        return StepCheck(
            reasons=list(self.reasons),
            signed=[{"label": f"{self.name} {g}"} for g in given],
            apply=lambda s, record_id: self.applied.append(record_id),
        )


@pytest.fixture(name="fakes")
def fakes_fixture() -> Iterator[dict[str, FakeProvider]]:
    providers = {"materials": FakeProvider("materials"), "equipment": FakeProvider("equipment")}
    with registry.step_requirements.only(dict(providers)):
        yield providers


@pytest.fixture(name="v3")
def v3_fixture(plant: Plant) -> Plant:
    plant.approve(3)
    return plant


def _at_selection(plant: Plant) -> str:
    """A v3 batch whose next step is the selection (lots and equipment declared)."""
    number = plant.start()
    assert plant.definition(number).version == 3
    plant.record(number, "receipt")
    return number


GIVEN = StepResources(materials=(registry.LotGiven("LOT-000001"), registry.LotGiven("LOT-9")),
                      equipment=("CPS-01",))


def _record(plant: Plant, number: str, resources: StepResources = GIVEN) -> Any:
    from batches import services

    step = plant.definition(number).step("selection")
    with plant.tx() as s:
        return services.record_step(s, number, "selection", values=good_values(step),
                                    user_id=plant.operator.user_id, signature=sign(),
                                    resources=resources)


def _records(plant: Plant, number: str) -> int:
    with plant.tx() as s:
        return s.scalar(select(func.count()).select_from(StepRecord)
                        .where(StepRecord.batch_number == number)) or 0


def test_every_reason_of_every_provider_refuses_the_step_at_once(
        v3: Plant, fakes: dict[str, FakeProvider]) -> None:
    fakes["materials"].reasons = [{"code": "lot_expired", "message": "lot LOT-9 expired"},
                                  {"code": "lot_insufficient", "message": "LOT-1 is short"}]
    fakes["equipment"].reasons = [{"code": "calibration_overdue", "message": "CPS-01 due"}]
    number = _at_selection(v3)
    with pytest.raises(DomainError) as refused:
        _record(v3, number)
    assert refused.value.code == "lot_expired"  # the first reason's code (SPEC §11)
    assert [r["code"] for r in refused.value.extra["reasons"]] == [
        "lot_expired", "lot_insufficient", "calibration_overdue"]
    # Nothing recorded, nothing applied: the lots and the equipment log stay as they were.
    assert _records(v3, number) == 1
    assert fakes["materials"].applied == [] and fakes["equipment"].applied == []


def test_the_providers_see_the_step_and_what_was_given(
        v3: Plant, fakes: dict[str, FakeProvider]) -> None:
    number = _at_selection(v3)
    _record(v3, number)
    context = fakes["materials"].seen[0]
    assert (context.batch_number, context.step_code, context.process_version) == (
        number, "selection", 3)
    assert [m.material for m in context.needs.materials] == ["CD4CD8-BEADS", "TS-520"]
    assert [e.type for e in context.needs.equipment] == ["closed_processing_system"]
    assert context.given == GIVEN and context.recording is True
    assert context.performer_id == v3.operator.user_id and context.site_code


@pytest.mark.requirement("21 CFR 11.70")
def test_what_the_providers_answered_is_signed_with_the_step_and_applied(
        v3: Plant, fakes: dict[str, FakeProvider]) -> None:
    from batches import services

    number = _at_selection(v3)
    record = _record(v3, number).record
    assert fakes["materials"].applied == [record.id] == fakes["equipment"].applied
    with v3.tx() as s:
        stored = s.get(StepRecord, record.id)
        assert stored is not None
        assert stored.used == {
            "materials": [{"label": "materials LotGiven(lot='LOT-000001', quantity=None)"},
                          {"label": "materials LotGiven(lot='LOT-9', quantity=None)"}],
            "equipment": [{"label": "equipment CPS-01"}],
        }
        assert services.signature_binds(s, stored)
        # A change to what the step used no longer matches its signatures.
        stored.resources = json.dumps({"materials": [], "equipment": []})
        assert not services.signature_binds(s, stored)
        s.rollback()


def test_a_declared_need_nobody_checks_refuses_the_step(v3: Plant) -> None:
    number = _at_selection(v3)
    with registry.step_requirements.only({}), pytest.raises(DomainError) as refused:
        _record(v3, number, StepResources())
    assert refused.value.code == "requirement_unchecked"
    assert {r["message"].split(" declares ")[1].split(",")[0]
            for r in refused.value.extra["reasons"]} == {"materials", "equipment"}


def test_a_step_that_needs_nothing_asks_no_provider(
        plant: Plant, fakes: dict[str, FakeProvider]) -> None:
    number = plant.start()  # v1: no step declares a need
    plant.record(number, "receipt")
    assert fakes["materials"].seen == [] and fakes["equipment"].seen == []


def _check(api: Any, number: str, body: dict[str, Any]) -> Any:
    return api.post(f"/api/v1/batches/{number}/steps/selection/check", json=body)


def test_the_dry_run_lists_every_reason_and_records_nothing(
        v3: Plant, fakes: dict[str, FakeProvider], login: Any) -> None:
    fakes["equipment"].reasons = [{"code": "equipment_out_of_service", "message": "CPS-01"}]
    number = _at_selection(v3)
    api = login(v3.operator)
    with v3.tx() as s:
        events = s.scalar(select(func.count()).select_from(AuditEvent))
    body = {"materials": [{"lot_id": "LOT-000001", "quantity": 2}], "equipment": ["CPS-01"],
            "values": {"cells_after_selection": 1}, "signature": sig()}
    answer = _check(api, number, body)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"ok": False, "reasons": [
        {"code": "equipment_out_of_service", "message": "CPS-01"}]}
    context = fakes["equipment"].seen[-1]
    assert context.recording is False
    assert context.given.materials == (registry.LotGiven("LOT-000001", 2.0),)
    fakes["equipment"].reasons = []
    assert _check(api, number, body).get_json() == {"ok": True, "reasons": []}
    assert _records(v3, number) == 1
    with v3.tx() as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == events
    assert fakes["materials"].applied == [] and fakes["equipment"].applied == []
    # A step out of order is a reason too, before any provider is asked.
    late = api.post(f"/api/v1/batches/{number}/steps/fill/check", json={})
    assert late.get_json()["ok"] is False
    assert late.get_json()["reasons"][0]["code"] == "invalid_transition"


def test_the_api_refusal_names_the_first_code_and_lists_all(
        v3: Plant, fakes: dict[str, FakeProvider], login: Any) -> None:
    fakes["materials"].reasons = [{"code": "material_missing", "message": "no TS-520 lot"}]
    fakes["equipment"].reasons = [{"code": "equipment_missing", "message": "no system"}]
    number = _at_selection(v3)
    step = v3.definition(number).step("selection")
    answer = login(v3.operator).post(
        f"/api/v1/batches/{number}/steps/selection",
        json={"values": good_values(step), "signature": sig(), "materials": [], "equipment": []})
    assert_problem(answer, 409, "material_missing")
    assert [r["code"] for r in answer.get_json()["reasons"]] == [
        "material_missing", "equipment_missing"]


def test_the_batch_record_shows_what_each_step_used(
        v3: Plant, fakes: dict[str, FakeProvider], login: Any) -> None:
    number = _at_selection(v3)
    _record(v3, number)
    api = login(v3.qa)
    record = api.get(f"/api/v1/batches/{number}").get_json()
    selection = next(s for s in record["steps"] if s["code"] == "selection")
    assert selection["records"][0]["resources"]["equipment"] == [{"label": "equipment CPS-01"}]
    exported = api.get(f"/api/v1/batches/{number}/record.json").get_json()
    used = next(s for s in exported["steps"] if s["code"] == "selection")["records"][0]
    assert used["resources"]["equipment"] == [{"label": "equipment CPS-01"}]
    pdf = api.get(f"/api/v1/batches/{number}/record.pdf")
    shown = " ".join(pdf_text(pdf.data).split())
    assert "used: equipment CPS-01; materials LotGiven(lot=" in shown, shown


def test_a_section_table_is_drawn_on_the_page_and_in_the_pdf(
        v3: Plant, client: Any, login: Any) -> None:
    def lots_used(session: Session, batch_number: str) -> list[registry.RecordSection]:
        return [registry.RecordSection("lots_test", [{"lot": "LOT-000042"}], registry.RecordTable(
            "Material lots used", ("Lot", "Material"), (("LOT-000042", "IL7"),)))]

    number = v3.start()
    saved = registry.batch_record_sections.owners()
    with registry.batch_record_sections.only({**dict(saved), "lots_test": lots_used}):
        pdf = login(v3.qa).get(f"/api/v1/batches/{number}/record.pdf")
        assert "Material lots used" in pdf_text(pdf.data)
        assert "LOT-000042" in pdf_text(pdf.data)
        page_login(client, v3.qa)
        page = client.get(f"/batches/{number}").get_data(as_text=True)
    assert 'class="data record-lots_test"' in page and "<td>LOT-000042</td>" in page


def test_the_step_form_asks_for_each_lot_and_equipment_and_checks_them(
        v3: Plant, fakes: dict[str, FakeProvider], client: Any) -> None:
    fakes["materials"].reasons = [{"code": "lot_expired", "message": "lot LOT-9 expired"}]
    number = _at_selection(v3)
    page_login(client, v3.operator)
    page = client.get(f"/batches/{number}").get_data(as_text=True)
    for field_name in ("lot_0", "lot_1", "eqp_0"):
        assert f'name="{field_name}"' in page
    assert 'name="qty_0"' not in page  # the step declares the quantity of both materials
    form = {"csrf_token": csrf_from(page), "lot_0": "LOT-9", "lot_1": "LOT-000002",
            "eqp_0": "CPS-01", "check": "1", "password": "typed-but-never-kept"}
    checked = client.post(f"/batches/{number}/steps/selection", data=form)
    text = checked.get_data(as_text=True)
    assert checked.status_code == 200
    assert "This step would be refused" in text and "lot LOT-9 expired" in text
    assert 'value="LOT-9"' in text and "typed-but-never-kept" not in text
    assert _records(v3, number) == 1
    given = fakes["materials"].seen[-1].given
    assert [m.lot for m in given.materials] == ["LOT-9", "LOT-000002"]
    assert [m.quantity for m in given.materials] == [1.0, 1.0]  # the declared quantities
    # Signing with the same expired lot: refused at the step with its reason, kept.
    form.pop("check")
    form.update(password=v3.operator.password, **good_form_values(v3, number))
    refused = client.post(f"/batches/{number}/steps/selection", data=form)
    assert refused.status_code == 409
    assert "lot LOT-9 expired" in refused.get_data(as_text=True)
    fakes["materials"].reasons = []
    done = client.post(f"/batches/{number}/steps/selection", data=form)
    assert done.status_code == 302, done.get_data(as_text=True)
    assert _records(v3, number) == 2


def good_form_values(plant: Plant, number: str) -> dict[str, str]:
    step = plant.definition(number).step("selection")
    return {f"v_{k}": str(v) for k, v in good_values(step).items()}
