"""The qualification check at a step (SPEC §11, §12; EU GMP Part IV 3, 21 CFR 211.25): the
performer and the verifier must each hold the declared qualification at the step's time
(`not_qualified`, one reason per person, naming the person, the qualification and why);
through batches with CART-AUTO v4, its reasons come with the other providers' in one 409."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from gmp_mes import registry
from gmp_mes.clock import clock
from gmp_mes.errors import DomainError
from gmp_mes.registry import StepCheck, StepContext
from tests.helpers import trail_time
from tests.test_batches_fixtures import Plant, good_values, plant_fixture, sign  # noqa: F401
from tests.test_training_fixtures import CODE, School, codes, school_fixture  # noqa: F401
from training import services

pytestmark = [pytest.mark.requirement("21 CFR 211.25"),
              pytest.mark.requirement("EU GMP Part IV 3")]


def test_a_qualified_performer_and_verifier_pass_and_what_they_held_is_signed(
        school: School) -> None:
    olga, oscar = school.grant(school.operator), school.grant(school.operator2)
    check = school.check(verifier="oscar", recording=True)
    assert check.reasons == []
    assert [(s["role"], s["username"], s["record"]) for s in check.signed] == [
        ("performer", "olga", olga), ("verifier", "oscar", oscar)]
    assert check.signed[0]["valid_until"].endswith("Z") and check.apply is None


def test_a_performer_never_trained_is_not_qualified(school: School) -> None:
    school.grant(school.operator2)
    check = school.check(verifier="oscar")
    assert codes(check) == ["not_qualified"]
    message = check.reasons[0]["message"]
    assert "performer Olga (olga)" in message and f"never trained in {CODE}" in message


def test_the_verifier_alone_not_qualified(school: School) -> None:
    school.grant(school.operator)
    school.grant(school.operator2, code="cart_manufacturing")  # another qualification
    check = school.check(verifier="Oscar")
    assert codes(check) == ["not_qualified"]
    assert "verifier Oscar (oscar)" in check.reasons[0]["message"]


def test_both_failing_give_two_reasons_and_an_unknown_verifier_is_not_qualified(
        school: School) -> None:
    check = school.check(verifier="oscar")
    assert codes(check) == ["not_qualified", "not_qualified"]
    assert ["performer" in check.reasons[0]["message"],
            "verifier" in check.reasons[1]["message"]] == [True, True]
    school.grant(school.operator)
    unknown = school.check(verifier="nobody")
    assert codes(unknown) == ["not_qualified"]
    assert "verifier nobody" in unknown.reasons[0]["message"]


def test_valid_at_the_steps_time_but_expired_a_second_later(school: School) -> None:
    until = clock.now() + timedelta(hours=2)
    school.grant(school.operator, until=until)
    assert school.check(at=until - timedelta(seconds=1)).reasons == []
    clock.freeze(until - timedelta(seconds=1))
    assert school.check().reasons == []
    clock.advance(timedelta(seconds=1))  # at == valid_until: no longer held
    late = school.check()
    assert codes(late) == ["not_qualified"]
    # When it expired, at the person's site (Paris) and in UTC, to the minute.
    assert f"{CODE} expired at " in late.reasons[0]["message"]
    assert "UTC)" in late.reasons[0]["message"]


def test_revoked_before_the_step_but_held_at_an_earlier_step(school: School) -> None:
    school.grant(school.operator)
    before = clock.now()
    clock.advance(timedelta(minutes=10))
    school.revoke(school.operator, reason="aseptic gowning failed")
    now = school.check()
    assert codes(now) == ["not_qualified"]
    assert "revoked at" in now.reasons[0]["message"]
    assert "aseptic gowning failed" in now.reasons[0]["message"]
    assert school.check(at=before).reasons == []  # the record held before its revocation


def test_a_step_without_a_qualification_costs_nothing(school: School) -> None:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(school.db.engine, "before_cursor_execute", count)
    try:
        from gmp_mes.registry import StepNeeds, StepResources

        ctx = StepContext("B", "C", "CART-AUTO", 4, "s", StepNeeds(), StepResources(),
                          clock.now(), school.operator.user_id, "oscar", "CLEAN1", True)
        with school.tx() as s:
            before = len(statements)
            assert services.check_step_qualification(s, ctx) == StepCheck()
            assert len(statements) == before
    finally:
        event.remove(school.db.engine, "before_cursor_execute", count)


# --- through batches, CART-AUTO v4 ---------------------------------------------------------


def _accepted(session: Session, context: StepContext) -> StepCheck:
    return StepCheck(signed=[])


def _no_beads(session: Session, context: StepContext) -> StepCheck:
    """A stand-in for the materials provider: every declared material missing."""
    return StepCheck(reasons=[{"code": "material_missing",
                               "message": f"step {context.step_code} needs {need.material}"}
                              for need in context.needs.materials])


@pytest.fixture(name="v4")
def v4_fixture(plant: Plant) -> Iterator[Plant]:
    plant.approve(4)
    clock.freeze(trail_time(plant.db) + timedelta(seconds=1))
    with registry.step_requirements.only({
            "materials": _accepted, "equipment": _accepted, "room_grade": _accepted,
            "qualification": services.check_step_qualification}):
        yield plant


def _grant(plant: Plant, person: Any, code: str, until: Any) -> None:
    with plant.tx(plant.qa) as s:
        services.grant_qualification(s, person.username, code=code, valid_until=until,
                                     user_id=plant.qa.user_id,
                                     signature=sign(meaning="approved"))


@pytest.mark.requirement("SPEC §11")
def test_v4_refuses_until_both_are_trained_then_expires_a_second_later(
        v4: Plant, login) -> None:
    number = v4.start()
    with pytest.raises(DomainError) as refused:
        v4.record(number, "receipt")  # critical: oscar verifies
    assert refused.value.code == "not_qualified"
    assert len(refused.value.extra["reasons"]) == 2
    until = clock.now() + timedelta(hours=3)
    _grant(v4, v4.operator, "cart_manufacturing", until)
    with pytest.raises(DomainError) as refused:
        v4.record(number, "receipt")
    assert [r["message"].split(" is ")[0] for r in refused.value.extra["reasons"]] == [
        "the verifier Oscar (oscar)"]
    _grant(v4, v4.operator2, "cart_manufacturing", until)
    clock.freeze(until - timedelta(seconds=1))
    outcome = v4.record(number, "receipt")
    assert [s["username"] for s in outcome.record.used["qualification"]] == ["olga", "oscar"]
    clock.advance(timedelta(seconds=1))
    with pytest.raises(DomainError) as refused:
        v4.record(number, "selection")
    assert refused.value.code == "not_qualified"
    assert "cart_manufacturing expired at" in refused.value.extra["reasons"][0]["message"]


@pytest.mark.requirement("SPEC §11")
def test_v4_one_409_lists_the_material_and_the_qualification_reasons(
        v4: Plant, login) -> None:
    number = v4.start()
    _grant(v4, v4.operator, "cart_manufacturing", clock.now() + timedelta(days=30))
    _grant(v4, v4.operator2, "cart_manufacturing", clock.now() + timedelta(days=30))
    v4.record(number, "receipt")
    with v4.tx(v4.qa) as s:
        services.revoke_qualification(s, "olga", "cart_manufacturing",
                                      reason="requalification overdue",
                                      user_id=v4.qa.user_id)
    clock.advance(timedelta(minutes=1))
    body = {"values": good_values(v4.definition(number).step("selection")),
            "signature": {"password": v4.operator.password, "meaning": "performed"}}
    with registry.step_requirements.only({
            "materials": _no_beads, "equipment": _accepted, "room_grade": _accepted,
            "qualification": services.check_step_qualification}):
        api = login(v4.operator)
        dry = api.post(f"/api/v1/batches/{number}/steps/selection/check", json=body).get_json()
        assert dry["ok"] is False
        assert [r["code"] for r in dry["reasons"]] == [
            "material_missing", "material_missing", "not_qualified"]
        refused = api.post(f"/api/v1/batches/{number}/steps/selection", json=body)
    assert refused.status_code == 409
    problem = refused.get_json()
    assert problem["code"] == "material_missing"
    assert [r["code"] for r in problem["reasons"]] == [
        "material_missing", "material_missing", "not_qualified"]
    assert "revoked at" in problem["reasons"][2]["message"]
