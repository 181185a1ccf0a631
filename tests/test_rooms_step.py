"""The room check at a step (SPEC §12): every refusal alone and together with other
domains' reasons in one 409, the two-person line clearance, and two COIs racing into a
freshly cleared room (the room row lock)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from gmp_mes import registry
from gmp_mes.clock import clock
from gmp_mes.errors import DomainError
from gmp_mes.registry import StepCheck, StepContext, StepResources
from tests.conftest import PASSWORD, sig
from tests.helpers import assert_problem, count
from tests.test_batches_fixtures import (
    good_values,
    plant_fixture,  # noqa: F401
    sign,
)
from tests.test_rooms_fixtures import Ward, codes, ward_fixture  # noqa: F401

pytestmark = pytest.mark.requirement("EU GMP Part IV 9.4")


def test_a_step_that_declares_nothing_and_gives_no_room_reads_nothing(ward: Ward) -> None:
    from rooms import services

    ctx = ward.context("B-1", "COI-1", room=None, grade=None)
    with ward.tx() as s:
        statements: list[str] = []
        from sqlalchemy import event

        def seen(*args: Any) -> None:
            statements.append(str(args[2]))

        event.listen(s.get_bind(), "before_cursor_execute", seen)
        try:
            answer = services.check_step_room(s, ctx)
        finally:
            event.remove(s.get_bind(), "before_cursor_execute", seen)
    assert answer == StepCheck() and statements == []


@pytest.mark.parametrize(("given", "site", "grade", "code"), [
    (None, "CLEAN1", "C", "room_missing"),
    ("NOPE-9", "CLEAN1", "C", "room_unknown"),
    ("CR-C1", "CLEAN2", "C", "room_other_site"),
    ("CR-C1", "CLEAN1", "B", "room_grade_insufficient"),
])
def test_each_room_refusal_alone(ward: Ward, given: str | None, site: str, grade: str,
                                 code: str) -> None:
    ward.room("CR-C1", "C")
    answer = ward.check("B-1", "COI-1", room=given, grade=grade, site=site)
    assert codes(answer) == [code]
    assert answer.reasons[0]["message"]


def test_every_room_reason_at_once(ward: Ward) -> None:
    ward.room("CR-D2", "D", site=ward.plant_site_2())
    ward.check("B-1", "COI-1", room="CR-D2", grade=None, site=None, apply_record=1)
    answer = ward.check("B-2", "COI-2", room="CR-D2", grade="B")
    assert codes(answer) == ["room_other_site", "room_grade_insufficient",
                             "line_clearance_required"]


@pytest.mark.requirement("EU GMP Annex 1")
@pytest.mark.parametrize(("room_grade", "needed", "admits"), [
    ("A", "C", True), ("B", "C", True), ("C", "C", True), ("D", "C", False),
    ("A", "B", True), ("C", "B", False), ("A", "A", True), ("B", "A", False),
])
def test_a_cleaner_room_serves_a_step_needing_a_lower_grade(ward: Ward, room_grade: str,
                                                           needed: str, admits: bool) -> None:
    from rooms import services

    assert services.grade_admits(room_grade, needed) is admits
    ward.room("R1", room_grade)
    answer = ward.check("B-1", "COI-1", room="r1", grade=needed)
    assert codes(answer) == ([] if admits else ["room_grade_insufficient"])
    assert answer.signed == [{"room": "R1", "grade": room_grade, "name": "Room R1",
                              "line_clearance": None, "label": f"room R1 (grade {room_grade})"}]


def test_another_coi_needs_a_line_clearance_verified_by_a_second_person(ward: Ward) -> None:
    from rooms import services

    ward.room("CR-C1", "C")
    first, second = ward.plant.start(), ward.plant.start()
    ward.enter(first, "CR-C1")
    # The same COI again needs nothing; another COI is refused.
    ward.enter(first, "CR-C1", step="receipt")
    coi = ward.plant.batch(second).coi_id
    refused = ward.check(second, coi, room="CR-C1")
    assert codes(refused) == ["line_clearance_required"]
    assert first in refused.reasons[0]["message"]
    # One person's clearance does not count.
    clearance = ward.clear("CR-C1")
    assert codes(ward.check(second, coi, room="CR-C1")) == ["line_clearance_required"]
    # The performer cannot verify it: the second person must be another.
    with pytest.raises(DomainError) as same:
        ward.verify("CR-C1", clearance, person=ward.plant.operator)
    assert same.value.code == "segregation_of_duties"
    ward.verify("CR-C1", clearance)
    admitted = ward.check(second, coi, room="CR-C1", apply_record=7001)
    assert codes(admitted) == []
    assert admitted.signed[0]["line_clearance"] == clearance
    # Now the first COI is the other one: it needs a new clearance in turn.
    assert codes(ward.check(first, ward.plant.batch(first).coi_id, room="CR-C1")) == [
        "line_clearance_required"]
    with ward.tx() as s:
        view = services.room_view(s, "CR-C1")
        assert (view.last_coi, view.last_batch, view.cleared) == (coi, second, False)
        uses = services.room_record(s, "CR-C1").uses
        assert [u.clearance_id for u in uses] == [clearance, None, None]


def test_a_clearance_the_room_was_used_since_cannot_be_verified(ward: Ward) -> None:
    ward.room("CR-C1", "C")
    first = ward.plant.start()
    ward.enter(first, "CR-C1")
    clearance = ward.clear("CR-C1")
    ward.enter(first, "CR-C1")  # the same patient again: the clearance no longer holds
    with pytest.raises(DomainError) as stale:
        ward.verify("CR-C1", clearance)
    assert stale.value.code == "clearance_superseded"


@pytest.mark.requirement("EU GMP Part IV 3")
def test_the_database_refuses_a_clearance_verified_by_its_performer(ward: Ward) -> None:
    from sqlalchemy import update
    from sqlalchemy.exc import IntegrityError

    from rooms.models import LineClearance

    ward.room("CR-C1")
    clearance = ward.clear("CR-C1")
    with pytest.raises(IntegrityError), ward.tx() as s:
        s.execute(update(LineClearance).where(LineClearance.id == clearance).values(
            status="verified", verified_by=ward.plant.operator.user_id,
            verified_at=clock.now(), verified_signature_id=1))


@pytest.mark.slow
def test_two_cois_racing_into_a_freshly_cleared_room_one_enters(ward: Ward) -> None:
    """After one verified clearance, five other patients' steps at once, each in its own
    transaction: the room row lock lets exactly one in; the others then see its use."""
    from rooms import services

    ward.room("CR-C1")
    first = ward.plant.start()
    ward.enter(first, "CR-C1")
    ward.verify("CR-C1", ward.clear("CR-C1"))
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(5)

    def step(n: int) -> None:
        try:
            ctx = ward.context(f"B-{n}", f"COI-{n}", room="CR-C1", recording=True)
            barrier.wait(timeout=60)
            with ward.tx() as s:
                answer = services.check_step_room(s, ctx)
                if not answer.reasons and answer.apply is not None:
                    answer.apply(s, 9000 + n)
            results.append(codes(answer))
        except BaseException as error:  # reported below, never swallowed
            errors.append(error)

    threads = [threading.Thread(target=step, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [[]] + [["line_clearance_required"]] * 4
    assert count(ward.plant.db, "room_use") == 2


# --- through batches: CART-AUTO v4 -------------------------------------------------------

def _accepted(session: Session, context: StepContext) -> StepCheck:
    return StepCheck(signed=[])


def _lot_refused(session: Session, context: StepContext) -> StepCheck:
    return StepCheck(reasons=[{"code": "lot_not_released", "message": "lot LOT-1 is not "
                                                                      "released"}])


@pytest.fixture(name="v4")
def v4_fixture(ward: Ward) -> Iterator[Ward]:
    from rooms import services

    ward.plant.approve(4)
    with registry.step_requirements.only({
            "qualification": _accepted, "materials": _accepted, "equipment": _accepted,
            "room_grade": services.check_step_room}):
        yield ward


def _record(ward: Ward, number: str, step: str, room: str | None) -> Any:
    from batches import services as batches

    clock.advance(timedelta(minutes=1))
    definition = ward.plant.definition(number).step(step)
    with ward.tx() as s:
        return batches.record_step(
            s, number, step, values=good_values(definition),
            user_id=ward.plant.operator.user_id, signature=sign(),
            resources=StepResources(room=room),
            verifier=batches.VerifierInput(ward.plant.operator2.username, PASSWORD)
            if definition.critical else None)


@pytest.mark.requirement("SPEC §11")
def test_v4_refuses_every_reason_at_once_with_the_materials_reasons(v4: Ward, login) -> None:
    from rooms import services

    v4.room("CR-D1", "D")
    number = v4.plant.start()
    _record(v4, number, "receipt", None)
    api = login(v4.plant.operator)
    step = v4.plant.definition(number).step("selection")
    body = {"values": good_values(step), "signature": sig(), "room": "CR-D1"}
    with registry.step_requirements.only({
            "qualification": _accepted, "materials": _lot_refused, "equipment": _accepted,
            "room_grade": services.check_step_room}):
        dry = api.post(f"/api/v1/batches/{number}/steps/selection/check", json=body)
        assert [r["code"] for r in dry.get_json()["reasons"]] == [
            "lot_not_released", "room_grade_insufficient"]
        refused = api.post(f"/api/v1/batches/{number}/steps/selection", json=body)
        assert_problem(refused, 409, "lot_not_released")
        assert [r["code"] for r in refused.get_json()["reasons"]] == [
            "lot_not_released", "room_grade_insufficient"]
        missing = api.post(f"/api/v1/batches/{number}/steps/selection",
                           json={**body, "room": None})
        assert [r["code"] for r in missing.get_json()["reasons"]] == [
            "lot_not_released", "room_missing"]
    assert count(v4.plant.db, "room_use") == 0


def test_v4_records_the_room_in_the_step_and_the_batch_record(v4: Ward, login,
                                                              client) -> None:
    from tests.test_pages_core import page_login

    v4.room("CR-C1", "C")
    number = v4.plant.start()
    _record(v4, number, "receipt", None)
    api = login(v4.plant.operator)
    step = v4.plant.definition(number).step("selection")
    recorded = api.post(f"/api/v1/batches/{number}/steps/selection",
                        json={"values": good_values(step), "signature": sig(),
                              "room": "cr-c1"})
    assert recorded.status_code == 201, recorded.get_json()
    assert recorded.get_json()["record"]["resources"]["room_grade"][0]["room"] == "CR-C1"
    record = login(v4.plant.qa).get(f"/api/v1/batches/{number}/record.json").get_json()
    assert [(u["room"], u["step_code"]) for u in record["rooms"]] == [("CR-C1", "selection")]
    assert record["em_excursions"] == []
    room = api.get("/api/v1/rooms/CR-C1").get_json()
    assert (room["last_batch"], room["grade"]) == (number, "C")
    assert [u["step_code"] for u in room["uses"]] == ["selection"]
    page_login(client, v4.plant.qa)
    page = client.get(f"/batches/{number}").get_data(as_text=True)
    assert "Rooms used" in page and "<td>CR-C1</td>" in page
    # The step form asks for the room where the step declares a grade.
    page_login(client, v4.plant.operator)
    page = client.get(f"/batches/{number}").get_data(as_text=True)
    assert 'name="room"' in page and "grade C or cleaner" in page
