"""Environmental monitoring (SPEC §12, EU GMP Annex 1 (2022) §9): results judged against
the action limits of the room's grade and the site's alert limits; an excursion opens
exactly one deviation on each affected batch (critical in A and B), none outside its
window or in other rooms; a passed result does nothing; the sweep adds late batches once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmp_mes.clock import clock
from gmp_mes.errors import DomainError
from tests.helpers import count
from tests.test_batches_fixtures import plant_fixture  # noqa: F401
from tests.test_rooms_fixtures import Ward, ward_fixture  # noqa: F401

pytestmark = pytest.mark.requirement("EU GMP Annex 1 §9")


def _alerts(ward: Ward, kind: str) -> list[Any]:
    from sqlalchemy import select

    from gmp_mes.alerts import Alert

    with ward.tx() as s:
        return [(a.cause, a.severity, a.subject_id) for a in s.scalars(
            select(Alert).where(Alert.kind == kind).order_by(Alert.id))]


@pytest.mark.requirement("EU GMP Annex 1 §9.30")
@pytest.mark.parametrize(("grade", "limits"), [
    ("A", (0, 0, 0, 0)), ("B", (10, 5, 5, 5)), ("C", (100, 50, 25, None)),
    ("D", (200, 100, 50, None)),
])
def test_action_limits_of_annex_1_table_6(grade: str, limits: tuple) -> None:
    from rooms import services

    assert tuple(services.action_limit(grade, t) for t in (
        "air_active", "settle_plate", "contact_plate", "glove_print")) == limits


TABLE_6 = {"A": (0, 0, 0, 0), "B": (10, 5, 5, 5), "C": (100, 50, 25, None),
           "D": (200, 100, 50, None)}
TYPES = ("air_active", "settle_plate", "contact_plate", "glove_print")


@pytest.mark.requirement("EU GMP Annex 1 §9.30")
@settings(max_examples=200, deadline=None)
@given(grade=st.sampled_from("ABCD"), index=st.integers(min_value=0, max_value=3),
       value=st.integers(min_value=0, max_value=400),
       alert=st.none() | st.integers(min_value=1, max_value=200))
def test_judged_at_or_below_the_action_limit_warned_at_the_alert_limit(
        grade: str, index: int, value: int, alert: int | None) -> None:
    from rooms import services

    limit = TABLE_6[grade][index]
    passed, alert_level = services.judge(grade, TYPES[index], value, alert)
    assert passed is (limit is None or value <= limit)
    assert alert_level is (passed and alert is not None and value >= alert)
    if grade == "A":
        assert passed is (value == 0)  # no growth


@pytest.mark.requirement("EU GMP Annex 1 §9.30")
def test_a_grade_b_failure_opens_one_critical_deviation_per_affected_batch(ward: Ward) -> None:
    ward.room("CR-B1", "B")
    ward.room("CR-B2", "B")
    before, inside, twice, other_room = (ward.plant.start() for _ in range(4))
    ward.enter(before, "CR-B1")
    ward.em("CR-B1", "settle_plate", 2)  # passed: the window starts here
    ward.em("CR-B1", "air_active", 0)  # another sample type does not move it
    ward.verify("CR-B1", ward.clear("CR-B1"))
    ward.enter(inside, "CR-B1")
    ward.enter(inside, "CR-B1")
    ward.verify("CR-B1", ward.clear("CR-B1"))
    ward.enter(twice, "CR-B1")
    ward.enter(other_room, "CR-B2")
    sampled = clock.now()
    clock.advance(timedelta(days=3))  # plates are read after incubation
    failed = ward.em("CR-B1", "settle_plate", 6, sampled_at=sampled)
    assert failed["passed"] is False and len(failed["deviations"]) == 2
    for number in (inside, twice):
        (deviation,) = ward.deviations(number)
        kind, severity, status, description = deviation
        assert (kind, severity, status) == ("automatic", "critical", "open")
        assert f"EM result {failed['id']}" in description and "settle plate 6" in description
        assert ward.plant.batch(number).status == "on_hold"
    assert ward.deviations(before) == [] and ward.deviations(other_room) == []
    assert ward.plant.batch(before).status == "in_process"
    assert _alerts(ward, "em_excursion") == [
        (f"em_excursion:{failed['id']}", "critical", "CR-B1")]
    # The sweep finds nothing more to link: exactly one per batch per excursion.
    from rooms import sweep

    with ward.tx() as s:
        assert sweep.sweep(s) == []
    assert count(ward.plant.db, "em_excursion_deviation") == 2
    assert count(ward.plant.db, "deviation") == 2
    assert len(_alerts(ward, "em_excursion")) == 1
    # The hold is batches' own rule: QA's signed assessment lifts it.
    from batches import services as batches
    from gmp_mes.signatures import SignatureInput
    from tests.conftest import PASSWORD

    with ward.tx(ward.plant.qa) as s:
        (deviation,) = batches.deviations_of(s, batches.get_batch(s, inside))
        batches.assess_deviation(s, deviation.number, assessment="plates reread; no impact",
                                 user_id=ward.plant.qa.user_id,
                                 signature=SignatureInput(PASSWORD, "reviewed"))
    assert ward.plant.batch(inside).status == "in_process"
    assert ward.plant.batch(twice).status == "on_hold"


def test_a_grade_c_failure_is_major_and_with_no_earlier_pass_takes_every_use(
        ward: Ward) -> None:
    ward.room("CR-C1", "C")
    first = ward.plant.start()
    ward.enter(first, "CR-C1")
    failed = ward.em("CR-C1", "contact_plate", 26)
    assert failed["passed"] is False
    assert [d[1] for d in ward.deviations(first)] == ["major"]
    assert _alerts(ward, "em_excursion")[0][1] == "major"


def test_a_passed_result_does_nothing_to_batches(ward: Ward) -> None:
    ward.room("CR-B1", "B")
    number = ward.plant.start()
    ward.enter(number, "CR-B1")
    deviations, alerts = count(ward.plant.db, "deviation"), count(ward.plant.db, "alert")
    passed = ward.em("CR-B1", "air_active", 10)  # at the limit: passes
    assert passed == {"id": passed["id"], "passed": True, "alert_level": False,
                      "warning": None, "deviations": [], "released": []}
    assert count(ward.plant.db, "deviation") == deviations
    assert count(ward.plant.db, "alert") == alerts
    assert ward.plant.batch(number).status == "in_process"


def test_an_alert_level_result_passes_with_a_warning_and_no_deviation(ward: Ward) -> None:
    from rooms import services

    ward.room("CR-C1", "C")
    number = ward.plant.start()
    ward.enter(number, "CR-C1")
    with ward.tx(ward.admin) as s:
        services.set_alert_limit(s, site_code="CLEAN1", grade="C", sample_type="settle_plate",
                                 alert_limit=25, user_id=ward.admin.user_id)
    below = ward.em("CR-C1", "settle_plate", 24)
    assert (below["passed"], below["alert_level"], below["warning"]) == (True, False, None)
    at = ward.em("CR-C1", "settle_plate", 25)
    assert (at["passed"], at["alert_level"]) == (True, True)
    assert "alert limit 25" in at["warning"] and at["deviations"] == []
    assert _alerts(ward, "em_alert_level") == [
        (f"em_alert_level:{at['id']}", "warning", "CR-C1")]
    assert ward.deviations(number) == []


def test_alert_limits_stay_at_or_below_the_action_limit(ward: Ward) -> None:
    from rooms import services

    with ward.tx(ward.admin) as s:
        for grade, sample_type, limit in (("A", "air_active", 1), ("B", "settle_plate", 6)):
            with pytest.raises(DomainError) as refused:
                services.set_alert_limit(s, site_code="CLEAN1", grade=grade,
                                         sample_type=sample_type, alert_limit=limit,
                                         user_id=ward.admin.user_id)
            assert "alert_limit" in refused.value.errors
        # No action limit (glove prints in D): any alert limit; set again, replaced.
        services.set_alert_limit(s, site_code="CLEAN1", grade="D", sample_type="glove_print",
                                 alert_limit=40, user_id=ward.admin.user_id)
        services.set_alert_limit(s, site_code="CLEAN1", grade="D", sample_type="glove_print",
                                 alert_limit=30, user_id=ward.admin.user_id)
        assert [(r.grade, r.alert_limit) for r in services.alert_limits(s, "CLEAN1")] == [
            ("D", 30)]


def test_a_glove_print_in_grade_d_has_no_action_limit_and_cannot_fail(ward: Ward) -> None:
    """Annex 1 sets no glove-print limit in C and D: kept and trended, never an excursion;
    a site alert limit still warns."""
    from rooms import services

    ward.room("CR-D1", "D")
    number = ward.plant.start()
    ward.enter(number, "CR-D1")
    high = ward.em("CR-D1", "glove_print", 300)
    assert (high["passed"], high["alert_level"], high["deviations"]) == (True, False, [])
    with ward.tx(ward.admin) as s:
        services.set_alert_limit(s, site_code="CLEAN1", grade="D", sample_type="glove_print",
                                 alert_limit=20, user_id=ward.admin.user_id)
    warned = ward.em("CR-D1", "glove_print", 21)
    assert (warned["passed"], warned["alert_level"]) == (True, True)
    assert ward.deviations(number) == []


def test_the_sweep_links_a_batch_entering_an_open_excursion_window_once(ward: Ward) -> None:
    from rooms import sweep

    ward.room("CR-B1", "B")
    first, late, after_pass = (ward.plant.start() for _ in range(3))
    ward.enter(first, "CR-B1")
    failed = ward.em("CR-B1", "glove_print", 9)
    assert len(failed["deviations"]) == 1
    ward.verify("CR-B1", ward.clear("CR-B1"))
    ward.enter(late, "CR-B1")  # no passed glove print since: still inside the window
    with ward.tx() as s:
        lines = sweep.sweep(s)
    assert len(lines) == 1 and late in lines[0]
    with ward.tx() as s:
        assert sweep.sweep(s) == []  # reruns add nothing
    assert [d[1] for d in ward.deviations(late)] == ["critical"]
    ward.em("CR-B1", "glove_print", 0)  # the room shown back in control closes the window
    ward.verify("CR-B1", ward.clear("CR-B1"))
    ward.enter(after_pass, "CR-B1")
    with ward.tx() as s:
        assert sweep.sweep(s) == []
    assert ward.deviations(after_pass) == []


def test_a_released_batch_gets_its_deviation_and_qa_an_alert_a_rejected_one_a_note(
        ward: Ward) -> None:
    from batches import services as batches
    from rooms import services

    ward.room("CR-B1", "B")
    released, rejected = ward.plant.start(), ward.plant.start()
    ward.enter(released, "CR-B1")
    ward.verify("CR-B1", ward.clear("CR-B1"))
    ward.enter(rejected, "CR-B1")
    with ward.tx(ward.plant.qa) as s:
        # QA's decisions as qc records them (the release rules are qc's, tested there).
        for number, status in ((released, "awaiting_release"), (released, "released"),
                               (rejected, "rejected")):
            batches.set_batch_status(s, number, status, reason="test")
    failed = ward.em("CR-B1", "air_active", 11)
    assert failed["released"] == [released] and len(failed["deviations"]) == 1
    assert ward.plant.batch(released).status == "released"
    assert [d[1:3] for d in ward.deviations(released)] == [("critical", "open")]
    assert ward.deviations(rejected) == []
    assert _alerts(ward, "em_excursion_released") == [
        (f"em_excursion_released:{failed['id']}:{released}", "critical", released)]
    with ward.tx() as s:
        links = services.links_of_result(s, failed["id"])
        assert [(link.batch_number, bool(link.deviation_number), bool(link.note))
                for link in links] == [(released, True, False), (rejected, False, True)]


@pytest.mark.parametrize(("field", "kwargs"), [
    ("value", {"value": -1}), ("value", {"value": 1.5}), ("value", {"value": True}),
    ("sample_type", {"sample_type": "swab"}),
    ("sampled_at", {"sampled_at": "future"}),
])
def test_bad_input_is_refused_with_its_field(ward: Ward, field: str, kwargs: dict) -> None:
    from gmp_mes.signatures import SignatureInput
    from rooms import services
    from tests.conftest import PASSWORD

    ward.room("CR-C1")
    args: dict[str, Any] = {"sample_type": "air_active", "value": 1,
                            "sampled_at": clock.now()}
    args.update(kwargs)
    if args["sampled_at"] == "future":
        args["sampled_at"] = clock.now() + timedelta(minutes=5)
    with ward.tx(ward.qc) as s, pytest.raises(DomainError) as refused:
        services.record_em_result(s, "CR-C1", user_id=ward.qc.user_id,
                                  signature=SignatureInput(PASSWORD, "performed"), **args)
    assert refused.value.status == 422 and field in refused.value.errors
    assert count(ward.plant.db, "em_result") == 0


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.integers(min_value=0, max_value=15), min_size=1, max_size=4))
def test_the_database_stores_passed_as_the_limit_says(ward: Ward, values: list[int]) -> None:
    """Whatever is entered, every stored result's passed agrees with its stored limit
    (the CHECK ``passed_computed`` backs the service). Bounded: each example writes."""
    from sqlalchemy import select

    from gmp_mes.errors import NotFound
    from rooms import services
    from rooms.models import EmResult

    try:  # the examples share the test's database: the room is made by the first
        with ward.tx() as s:
            services.get_room(s, "CR-B9")
    except NotFound:
        ward.room("CR-B9", "B")
    for value in values:
        ward.em("CR-B9", "air_active", value)
    with ward.tx() as s:
        for result in s.scalars(select(EmResult)):
            assert result.passed is (result.value <= 10)
