"""QC results and the QC overview at the service level (issue 6; SPEC §2, §5)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gmp_mes.clock import clock, utcnow
from gmp_mes.errors import (
    AlreadyExists,
    CoiMismatch,
    Conflict,
    SegregationOfDuties,
    SignatureRejected,
    ValidationFailed,
)
from processes.definitions import QcSpec
from tests.helpers import audit_events, count
from tests.test_qc_fixtures import (  # noqa: F401 - fixtures
    Lab,
    failing,
    lab_fixture,
    passing,
    plant_fixture,
    signed,
)

NUMERIC = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)


@given(value=NUMERIC, low=st.one_of(st.none(), NUMERIC), high=st.one_of(st.none(), NUMERIC))
def test_passed_is_computed_from_the_limits(value: float, low: Any, high: Any) -> None:
    """Invariant: a quantitative result passes exactly when min <= value <= max."""
    from qc.services.results import _evaluate

    if low is None and high is None:
        high = 0.0
    spec = QcSpec(test="x", unit="u", min=low, max=high)
    stored, outcome, unit, passed = _evaluate(spec, value=value, outcome=None, unit=None)
    assert (stored, outcome, unit) == (value, None, "u")
    assert passed == ((low is None or value >= low) and (high is None or value <= high))


@given(outcome=st.one_of(
    st.text(min_size=1, max_size=60).filter(lambda t: t.strip()),
    st.sampled_from(["negative", " Negative ", "POSITIVE", "invalid", "Negatve", "neg"]),
))
def test_qualitative_outcome_is_a_choice_and_passes_only_on_the_accept_value(
    outcome: str,
) -> None:
    """Issue 13: choices, not free text; anything but the accept value, its opposite or
    `invalid` is a 422 field error, never a signed failure."""
    from qc.services.results import _evaluate

    spec = QcSpec(test="sterility", accept="negative")
    normal = " ".join(outcome.split()).lower()
    if normal not in ("negative", "positive", "invalid"):
        with pytest.raises(ValidationFailed) as caught:
            _evaluate(spec, value=None, outcome=outcome, unit=None)
        assert list(caught.value.errors) == ["outcome"]
        return
    _, stored, _, passed = _evaluate(spec, value=None, outcome=outcome, unit=None)
    assert stored == normal and passed == (normal == "negative")


def test_result_fields_are_checked_against_the_spec() -> None:
    from qc.services.results import _evaluate

    quantitative = QcSpec(test="endotoxin", unit="EU/mL", max=5.0)
    qualitative = QcSpec(test="sterility", accept="negative")
    cases = [
        (quantitative, {"value": 1.0, "outcome": None, "unit": "IU/mL"}, "unit"),
        (quantitative, {"value": None, "outcome": "negative", "unit": None}, "outcome"),
        (quantitative, {"value": None, "outcome": None, "unit": None}, "value"),
        (quantitative, {"value": float("inf"), "outcome": None, "unit": None}, "value"),
        (qualitative, {"value": 1.0, "outcome": None, "unit": None}, "value"),
        (qualitative, {"value": None, "outcome": " ", "unit": None}, "outcome"),
        (qualitative, {"value": None, "outcome": "negative", "unit": "%"}, "unit"),
    ]
    for spec, fields, field in cases:
        with pytest.raises(ValidationFailed) as caught:
            _evaluate(spec, **fields)
        assert field in caught.value.errors, (fields, caught.value.errors)
    assert _evaluate(quantitative, value=5.0, outcome=None, unit="EU/mL")[3] is True
    assert _evaluate(quantitative, value=5.0001, outcome=None, unit=None)[3] is False


def test_record_result_computes_pass_defaults_and_signs(lab: Lab, db) -> None:
    number = lab.made()
    endotoxin = lab.spec(number, "endotoxin")
    result_id, passed = lab.result(number, "endotoxin", fields={"value": 4.9})
    assert passed is True
    _, failed = lab.result(number, "viability", fields={"value": 79.9})
    assert failed is False
    row = lab.overview(number)["endotoxin"]["results"][0]
    assert row["id"] == result_id
    assert row["unit"] == endotoxin.unit and row["method"] == endotoxin.method
    assert row["signature"]["meaning"] == "performed"
    assert row["signature"]["username"] == lab.analyst.username
    assert "quentin" in row["signature"]["manifestation"]
    assert audit_events(db, entity_type="qc_result", action="create")


def test_unknown_test_and_wrong_unit_are_field_errors(lab: Lab) -> None:
    number = lab.made()
    with pytest.raises(ValidationFailed) as caught:
        lab.result(number, "no_such_test", fields={"value": 1.0})
    assert "test" in caught.value.errors
    with pytest.raises(ValidationFailed) as caught:
        lab.result(number, "endotoxin", fields={"value": 1.0, "unit": "IU/mL"})
    assert "unit" in caught.value.errors
    assert lab.overview(number)["endotoxin"]["results"] == []


def test_wrong_password_records_no_result(lab: Lab, db) -> None:
    from qc import services

    number = lab.made()
    with pytest.raises(SignatureRejected), lab.tx() as s:
        services.record_result(s, number, test="endotoxin", value=1.0,
                               user_id=lab.analyst.user_id, signature=signed(password="nope"))
    assert count(db, "qc_result") == 0


def test_sample_item_must_be_a_qc_sample_of_the_same_coi(lab: Lab) -> None:
    from identity import services as identity

    number, other = lab.made(), lab.made()
    with lab.tx() as s:
        coi, other_coi = lab.plant.batch(number).coi_id, lab.plant.batch(other).coi_id
        sample = identity.create_item(s, kind="qc_sample", coi_id=coi, site_code="CLEAN1",
                                      status="available", batch_number=number).item_id
        foreign = identity.create_item(s, kind="qc_sample", coi_id=other_coi,
                                       site_code="CLEAN1", status="available").item_id
    bag = next(iter(lab.items(number)))
    with pytest.raises(CoiMismatch):
        lab.result(number, "endotoxin", sample_item_id=foreign, fields={"value": 1.0})
    with pytest.raises(ValidationFailed) as caught:
        lab.result(number, "endotoxin", sample_item_id=bag, fields={"value": 1.0})
    assert "sample_item_id" in caught.value.errors
    with pytest.raises(ValidationFailed) as caught:
        lab.result(number, "endotoxin", sample_item_id="ITM-NOPE", fields={"value": 1.0})
    assert "sample_item_id" in caught.value.errors
    lab.result(number, "endotoxin", sample_item_id=sample.lower(), fields={"value": 1.0})
    assert lab.overview(number)["endotoxin"]["results"][0]["sample_item_id"] == sample


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_results_are_never_edited_corrections_are_versions(lab: Lab, db) -> None:
    from qc.services._common import _head

    number = lab.made()
    first, _ = lab.result(number, "viability", fields={"value": 79.0})
    # An out-of-specification result is not tested away by a second entry.
    with pytest.raises(Conflict) as caught:
        lab.result(number, "viability", fields={"value": 90.0})
    assert caught.value.code == "qc_result_exists"
    with pytest.raises(ValidationFailed):
        lab.result(number, "viability", fields={"value": 90.0}, corrects=first)  # no reason
    second, passed = lab.result(number, "viability", fields={"value": 90.0}, corrects=first,
                                reason="transcription error: 90.0 read as 79.0")
    assert passed is True
    with pytest.raises(Conflict) as caught:  # only the current version can be corrected
        lab.result(number, "viability", fields={"value": 91.0}, corrects=first, reason="again")
    assert caught.value.code == "superseded"
    row = lab.overview(number)["viability"]
    assert row["status"] == "passed" and row["current_result_id"] == second
    versions = {r["id"]: r for r in row["results"]}
    assert versions[first]["superseded"] and versions[first]["value"] == 79.0
    assert versions[second]["version"] == 2 and versions[second]["supersedes_id"] == first
    assert versions[second]["correction_reason"].startswith("transcription")
    events = audit_events(db, entity_type="qc_result", action="create")
    assert any(e["reason"] and "transcription" in e["reason"] for e in events)
    # The database itself refuses to overwrite or delete a result (append-only guard).
    for statement in ("UPDATE qc_result SET value = 99", "DELETE FROM qc_result"):
        with pytest.raises(DBAPIError), db.engine.begin() as c:
            c.execute(text(statement))
    with lab.tx() as s:
        assert _head(s, first).value == 79.0


def test_invalid_result_reopens_the_test_for_a_retest(lab: Lab) -> None:
    from qc import services

    number = lab.made()
    first, _ = lab.result(number, "mycoplasma", fields={"outcome": "positive"})
    with pytest.raises(ValidationFailed), lab.tx() as s:
        services.invalidate_result(s, first, user_id=lab.analyst.user_id, signature=signed(),
                                   reason=" ")
    with lab.tx() as s:
        services.invalidate_result(s, first, user_id=lab.analyst.user_id, signature=signed(),
                                   reason="NAT run failed: internal control not amplified")
    row = lab.overview(number)["mycoplasma"]
    assert row["status"] == "pending" and row["invalid"] == 1
    assert row["results"][0]["invalid"] and row["results"][0]["invalidation_signature"]
    with pytest.raises(Conflict), lab.tx() as s:
        services.invalidate_result(s, first, user_id=lab.analyst.user_id, signature=signed(),
                                   reason="twice")
    lab.result(number, "mycoplasma", fields={"outcome": "Negative"})
    assert lab.overview(number)["mycoplasma"]["status"] == "passed"


@pytest.mark.requirement("21 CFR 11.10(g)")
def test_second_person_review(lab: Lab) -> None:
    from qc import services

    number = lab.made()
    result_id, _ = lab.result(number, "dose")
    with pytest.raises(SegregationOfDuties), lab.tx() as s:
        services.review_result(s, result_id, user_id=lab.analyst.user_id,
                               signature=signed("reviewed"))
    with pytest.raises(ValidationFailed), lab.tx(lab.analyst2) as s:
        services.review_result(s, result_id, user_id=lab.analyst2.user_id,
                               signature=signed("performed"))
    with lab.tx(lab.analyst2) as s:
        services.review_result(s, result_id, user_id=lab.analyst2.user_id,
                               signature=signed("reviewed"))
    with pytest.raises(AlreadyExists), lab.tx(lab.analyst2) as s:
        services.review_result(s, result_id, user_id=lab.analyst2.user_id,
                               signature=signed("reviewed"))
    review = lab.overview(number)["dose"]["results"][0]["review_signature"]
    assert review["username"] == lab.analyst2.username and review["meaning"] == "reviewed"


def test_overview_statuses_and_due_times(lab: Lab) -> None:
    from batches import services as batches

    number = lab.plant.start()
    lab.plant.run_to(number, "transduction")
    rows = lab.overview(number)
    assert {r["status"] for r in rows.values()} == {"required"}
    assert all(r["required"] and r["due_at"] is None for r in rows.values())
    for code in ("expansion", "harvest", "fill"):
        lab.plant.record(number, code)
    with lab.tx() as s:
        batch = batches.get_batch(s, number)
        done = {r.step_code: r.performed_at for r in batches.current_records(s, batch)}
    rows = lab.overview(number)
    sterility, mycoplasma = rows["sterility"], rows["mycoplasma"]
    assert sterility["status"] == "pending" and sterility["time_to_result"] == "P7D"
    assert sterility["due_at"] == (done["fill"] + timedelta(days=7)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    assert mycoplasma["due_at"] == (done["harvest"] + timedelta(days=1)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    assert rows["endotoxin"]["due_at"] is None  # no time_to_result in the spec
    lab.result(number, "endotoxin")
    lab.result(number, "viability", fields=failing(lab.spec(number, "viability")))
    rows = lab.overview(number)
    assert (rows["endotoxin"]["status"], rows["viability"]["status"]) == ("passed", "failed")
    assert rows["viability"]["failed"] and not rows["viability"]["passed"]


def test_qc_overdue_sweep_raises_one_alert_per_test(lab: Lab, app, db) -> None:
    from gmp_mes.alerts import list_alerts
    from qc import sweep

    clock.freeze(utcnow())
    number = lab.ready(skip=("sterility", "mycoplasma"))
    clock.advance(timedelta(days=2))  # mycoplasma (P1D) overdue, sterility (P7D) not yet
    lines = sweep.job(app)
    assert lines == [f"qc overdue: {number} mycoplasma"]
    assert sweep.job(app) == []
    clock.advance(timedelta(days=6))
    assert sweep.job(app) == [f"qc overdue: {number} sterility"]
    with lab.tx() as s:
        alerts = [a for a in list_alerts(s) if a.kind == "qc_overdue"]
    assert len(alerts) == 2 and {a.subject_id for a in alerts} == {number}


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.floats(min_value=0.0, max_value=20.0, allow_nan=False))
def test_stored_pass_matches_the_spec_for_random_values(lab: Lab, value: float) -> None:
    """Random endotoxin values through the service: `passed` == value <= max, always."""
    from batches import services as batches
    from qc import services
    from qc.services._common import _states

    if not hasattr(lab, "_number"):
        lab._number = lab.made()  # type: ignore[attr-defined]
    number = lab._number  # type: ignore[attr-defined]
    spec = lab.spec(number, "endotoxin")
    with lab.tx() as s:
        current = _states(s, number).get("endotoxin")
        head = current.current if current else None
        result = services.record_result(
            s, number, test="endotoxin", value=value, user_id=lab.analyst.user_id,
            signature=signed(), corrects=head.id if head else None,
            reason="re-read" if head else None)
        assert result.passed == (value <= spec.max)
        assert batches.get_batch(s, number).status == "awaiting_release"


def test_passing_helper_is_inside_every_spec(lab: Lab) -> None:
    """The fixtures' passing()/failing() really pass and fail (so other tests mean what
    they say)."""
    from qc.services.results import _evaluate

    number = lab.made()
    for spec in lab.specs(number):
        good, bad = passing(spec), failing(spec)
        assert _evaluate(spec, value=good.get("value"), outcome=good.get("outcome"),
                         unit=None)[3] is True
        assert _evaluate(spec, value=bad.get("value"), outcome=bad.get("outcome"),
                         unit=None)[3] is False
