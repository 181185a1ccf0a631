"""QA release (SPEC §5) at the service level: every condition alone and together,
segregation of duties, signatures, conditional release and the result after release,
rejection, and concurrent release attempts."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from gmp_mes.audit import Actor
from gmp_mes.clock import clock, utcnow
from gmp_mes.errors import (
    DomainError,
    InvalidTransition,
    SegregationOfDuties,
    SignatureRejected,
    ValidationFailed,
)
from tests.conftest import PASSWORD
from tests.helpers import count
from tests.test_qc_fixtures import (  # noqa: F401 - fixtures
    Lab,
    failing,
    lab_fixture,
    plant_fixture,
    signed,
)


def refusal(lab: Lab, number: str, **kw: Any) -> DomainError:
    with pytest.raises(DomainError) as caught:
        lab.release(number, **kw)
    assert caught.value.status == 409, caught.value
    return caught.value


def codes(error: DomainError) -> list[str]:
    return [p["code"] for p in error.extra["problems"]]


def unchanged(lab: Lab, number: str, db: Any, status: str = "awaiting_release") -> None:
    assert lab.status(number) == status
    assert set(lab.items(number).values()) <= {"quarantine"}
    assert count(db, "release_decision") == 0


@pytest.mark.requirement("EU GMP Annex 16 §1.7")
def test_release_when_every_condition_holds(lab: Lab, db) -> None:
    number = lab.ready(bags=2)
    assert lab.release(number) == "release"
    assert lab.status(number) == "released"
    assert list(lab.items(number).values()) == ["released", "released"]
    from qc import services
    from qc.schemas import record_release

    with lab.tx() as s:
        decision = record_release(services.release_decision(s, number))
    assert decision["status"] == "released" and decision["conditional"] is False
    assert decision["release signature"]["meaning"] == "released"
    assert decision["release signature"]["username"] == lab.qa.username


@pytest.mark.requirement("EU GMP Annex 16 §1.7")
def test_a_batch_on_cart_auto_v2_walks_through_its_label_check_to_release(lab: Lab) -> None:
    """v2 (issue 15): the label check after the fill is one more signed step; with every
    bag scanned the batch reaches release like a v1 batch."""
    lab.plant.approve(2)
    number = lab.plant.start()
    assert lab.plant.definition(number).version == 2
    lab.plant.run_to(number, "fill", expansion_days=1)
    lab.all_pass(number)
    error = refusal(lab, number)
    assert codes(error) == ["steps_incomplete"] and "label_check" in error.detail
    lab.plant.record(number, "label_check", {})
    lab.plant.record(number, "cryopreservation")
    assert lab.status(number) == "awaiting_release"
    assert lab.release(number) == "release"
    assert lab.status(number) == "released"
    assert set(lab.items(number).values()) == {"released"}


def test_steps_incomplete_alone(lab: Lab, db) -> None:
    number = lab.plant.start()
    lab.plant.run_to(number, "fill", expansion_days=1)  # cryopreservation not recorded
    lab.all_pass(number)
    error = refusal(lab, number)
    assert error.code == "steps_incomplete" and codes(error) == ["steps_incomplete"]
    unchanged(lab, number, db, "in_process")


def test_qc_incomplete_alone(lab: Lab, db) -> None:
    number = lab.ready(skip=("endotoxin",))
    error = refusal(lab, number)
    assert codes(error) == ["qc_incomplete"] and "endotoxin" in error.detail
    unchanged(lab, number, db)


def test_qc_failed_alone(lab: Lab, db) -> None:
    number = lab.ready(skip=("potency",))
    lab.result(number, "potency", fields=failing(lab.spec(number, "potency")))
    error = refusal(lab, number)
    assert codes(error) == ["qc_failed"] and "potency" in error.detail
    unchanged(lab, number, db)


def test_open_deviation_alone(lab: Lab, db) -> None:
    from batches import services as batches

    number = lab.ready()
    with lab.tx(lab.plant.operator) as s:
        batches.open_deviation(s, number, severity="major", description="LN2 alarm in store",
                               user_id=lab.plant.operator.user_id)
    error = refusal(lab, number)
    assert codes(error) == ["open_deviation"]
    unchanged(lab, number, db, "on_hold")


def test_expired_alone(lab: Lab, db) -> None:
    clock.freeze(utcnow())
    number = lab.ready()
    clock.advance(timedelta(days=271))  # past the P270D shelf life of the final product
    error = refusal(lab, number)
    assert codes(error) == ["expired"]
    unchanged(lab, number, db)


def test_every_unmet_condition_is_named(lab: Lab, db) -> None:
    from batches import services as batches

    clock.freeze(utcnow())
    number = lab.plant.start()
    lab.plant.run_to(number, "fill", expansion_days=1)
    lab.all_pass(number, skip=("dose", "identity"))
    lab.result(number, "identity", fields=failing(lab.spec(number, "identity")))
    with lab.tx(lab.plant.operator) as s:
        batches.open_deviation(s, number, severity="critical", description="bag leak",
                               user_id=lab.plant.operator.user_id)
    clock.advance(timedelta(days=300))
    error = refusal(lab, number)
    assert codes(error) == ["steps_incomplete", "qc_incomplete", "qc_failed",
                            "open_deviation", "expired"]
    assert error.code == "steps_incomplete"
    for word in ("cryopreservation", "dose", "identity", "critical", "expired"):
        assert word in error.detail
    unchanged(lab, number, db, "on_hold")


@pytest.mark.requirement("SPEC §5.4")
def test_segregation_of_duties_for_steps(lab: Lab, make_user, db) -> None:
    both = make_user("pat", "operator", "qa")
    number = lab.plant.start()
    for step in lab.plant.definition(number).steps:
        lab.plant.record(number, step.code, person=both if step.code == "harvest" else None)
    lab.all_pass(number)
    with pytest.raises(SegregationOfDuties):
        lab.release(number, both)
    unchanged(lab, number, db)
    # The second operator only verified critical steps: verifying counts too.
    verifier = lab.plant.operator2
    with lab.tx() as s:
        from gmp_mes.models import UserRole

        s.add(UserRole(user_id=verifier.user_id, role="qa"))
    with pytest.raises(SegregationOfDuties):
        lab.release(number, verifier)
    assert lab.release(number, lab.qa2) == "release"


@pytest.mark.requirement("SPEC §5.4")
def test_segregation_of_duties_for_qc_entries(lab: Lab, make_user, db) -> None:
    from qc import services

    analyst_qa = make_user("ada", "qc", "qa")
    reviewer_qa = make_user("rex", "qc", "qa")
    number = lab.ready(skip=("endotoxin",))
    result_id, _ = lab.result(number, "endotoxin", person=analyst_qa)
    with lab.tx(reviewer_qa) as s:
        services.review_result(s, result_id, user_id=reviewer_qa.user_id,
                               signature=signed("reviewed"))
    for person in (analyst_qa, reviewer_qa):
        with pytest.raises(SegregationOfDuties):
            lab.release(number, person)
    unchanged(lab, number, db)
    assert lab.release(number, lab.qa) == "release"


@pytest.mark.requirement("21 CFR 11.200(a)(1)")
def test_wrong_signature_password_changes_nothing(lab: Lab, db) -> None:
    number = lab.ready()
    with pytest.raises(SignatureRejected):
        lab.release(number, password="not-my-password")
    unchanged(lab, number, db)
    with pytest.raises(ValidationFailed), lab.tx(lab.qa) as s:
        from qc import services

        services.release_batch(s, number, user_id=lab.qa.user_id,
                               signature=signed("approved"))
    unchanged(lab, number, db)


@pytest.mark.requirement("EU GMP Part IV 11.5")
def test_conditional_release_needs_justification_and_a_release_before_result_test(
    lab: Lab, db
) -> None:
    number = lab.ready(skip=("sterility",))
    error = refusal(lab, number)
    assert codes(error) == ["qc_incomplete"] and "conditional" in error.detail
    with pytest.raises(ValidationFailed):
        lab.release(number, conditional=True, justification="  ")
    unchanged(lab, number, db)
    # Only release_before_result tests may stay pending.
    other = lab.ready(skip=("sterility", "mycoplasma"))
    error = refusal(lab, other, conditional=True, justification="patient relapsing")
    assert codes(error) == ["qc_incomplete"] and "mycoplasma" in error.detail
    # Nothing pending: a conditional release makes no sense.
    complete = lab.ready()
    with pytest.raises(ValidationFailed) as caught:
        lab.release(complete, conditional=True, justification="why not")
    assert "conditional" in caught.value.errors
    assert lab.release(number, conditional=True,
                       justification="patient relapsing; sterility pending at day 3") \
        == "conditional_release"
    assert lab.status(number) == "conditionally_released"
    assert set(lab.items(number).values()) == {"conditionally_released"}
    from qc import services
    from qc.schemas import record_release

    with lab.tx() as s:
        state = record_release(services.release_decision(s, number))
    assert state["conditional"] is True
    assert state["conditional_release pending tests"] == "sterility"
    assert "relapsing" in state["conditional_release justification"]


@pytest.mark.requirement("EU GMP Annex 16 §1.7")
def test_passing_result_after_conditional_release_waits_for_the_final_release(lab: Lab) -> None:
    """SPEC §5: the pending result passing does not finalise the release; QA's signed
    final release does, and moves only the bags still waiting at the manufacturer."""
    number = lab.ready(skip=("sterility",), bags=2)
    lab.release(number, conditional=True, justification="clinical urgency")
    first, second = lab.items(number)
    from identity import services as identity

    with lab.tx() as s:
        identity.transition_item(s, first, "shipped", reason="test: bag on its way")
    lab.result(number, "sterility")
    assert lab.status(number) == "conditionally_released"
    assert lab.items(number) == {first: "shipped", second: "conditionally_released"}
    assert lab.release(number, lab.qa2) == "final_release"
    assert lab.status(number) == "released"
    assert lab.items(number) == {first: "shipped", second: "released"}
    from qc import services

    with lab.tx() as s:
        decisions = services.decisions_of(s, number)
    assert [d.kind for d in decisions] == ["conditional_release", "final_release"]
    final = decisions[-1]
    assert final.decided_by == lab.qa2.user_id and final.signature.meaning == "released"
    assert final.items == [second]


@pytest.mark.requirement("SPEC §5 (result after release)")
def test_positive_sterility_after_conditional_release_blocks_and_alerts_once(
    lab: Lab, app
) -> None:
    from gmp_mes.alerts import list_alerts
    from identity import services as identity
    from qc import services

    number = lab.ready(skip=("sterility",), bags=3)
    lab.release(number, conditional=True, justification="clinical urgency")
    given, shipped, stored = lab.items(number)
    with lab.tx() as s:
        identity.transition_item(s, given, "administered", reason="test: infused")
        identity.transition_item(s, shipped, "shipped", reason="test: bag on its way")
    first, _ = lab.result(number, "sterility", fields={"outcome": "positive"})
    assert lab.items(number) == {given: "administered", shipped: "blocked", stored: "blocked"}
    assert lab.status(number) == "conditionally_released"
    # A correction that still fails raises no second alert and changes nothing more.
    lab.result(number, "sterility", fields={"outcome": "positive"},
               corrects=first, reason="confirmed on subculture (S. epidermidis)")
    with lab.tx() as s:
        alerts = [a for a in list_alerts(s) if a.kind == services.POSITIVE_AFTER_RELEASE]
        decisions = services.decisions_of(s, number)
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.severity == "critical" and set(alert.role_list) == {"qa", "clinician"}
    assert alert.site_code == "HOSP1"  # the patient's treatment site (bags still at CLEAN1)
    assert given in alert.message and "ADMINISTERED" in alert.message
    failure = decisions[-1]
    assert failure.kind == "failed_after_release" and failure.administered == [given]
    assert sorted(failure.items) == sorted([shipped, stored]) and failure.alert_id == alert.id
    # A blocked bag can never be released again; QA can still reject the batch.
    with lab.tx(lab.qa) as s:
        services.reject_batch(s, number, user_id=lab.qa.user_id,
                              signature=signed("rejected"), reason="sterility positive")
    assert lab.items(number) == {given: "administered", shipped: "rejected",
                                 stored: "rejected"}


def test_reject_then_release_refused(lab: Lab, db) -> None:
    from qc import services

    number = lab.ready(bags=2)
    with pytest.raises(ValidationFailed), lab.tx(lab.qa) as s:
        services.reject_batch(s, number, user_id=lab.qa.user_id,
                              signature=signed("rejected"), reason=" ")
    with pytest.raises(SignatureRejected), lab.tx(lab.qa) as s:
        services.reject_batch(s, number, user_id=lab.qa.user_id,
                              signature=signed("rejected", "bad"), reason="x")
    with lab.tx(lab.qa) as s:
        services.reject_batch(s, number, user_id=lab.qa.user_id,
                              signature=signed("rejected"), reason="cell count trend")
    assert lab.status(number) == "rejected"
    assert set(lab.items(number).values()) == {"rejected"}
    with pytest.raises(InvalidTransition):
        lab.release(number)
    with pytest.raises(DomainError) as caught:
        lab.result(number, "endotoxin", fields={"value": 1.0}, corrects=None)
    assert caught.value.code == "qc_closed"


def _race(lab: Lab, number: str, attempts: int = 20) -> list[Any]:
    from qc import services

    db = lab.plant.db
    barrier = threading.Barrier(attempts)
    outcomes: list[Any] = [None] * attempts
    people = [lab.qa, lab.qa2]

    def attempt(n: int) -> None:
        person = people[n % 2]
        barrier.wait()
        try:
            with lab.plant.app.app_context(), db.transaction(
                actor=Actor(person.username, person.user_id, person.username)
            ) as s:
                services.release_batch(s, number, user_id=person.user_id,
                                       signature=signed("released", PASSWORD))
            outcomes[n] = "released"
        except DomainError as error:
            outcomes[n] = error.code
        except Exception as error:  # the test reports any other failure
            outcomes[n] = repr(error)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return outcomes


@pytest.mark.requirement("SPEC §5 (one transaction that locks the batch)")
def test_twenty_concurrent_releases_give_exactly_one(lab: Lab, db) -> None:
    number = lab.ready(bags=2)
    outcomes = _race(lab, number)
    assert outcomes.count("released") == 1, outcomes
    assert outcomes.count("invalid_transition") == 19, outcomes
    assert count(db, "release_decision") == 1
    assert lab.status(number) == "released"
    assert set(lab.items(number).values()) == {"released"}


def test_a_corrected_result_failing_after_conditional_release_also_blocks(lab: Lab) -> None:
    from qc import services
    from qc.services._common import _states

    number = lab.ready(skip=("sterility",))
    with lab.tx() as s:
        endotoxin = _states(s, number)["endotoxin"].current.id
    lab.release(number, conditional=True, justification="clinical urgency")
    lab.result(number, "endotoxin", fields={"value": 9.0}, corrects=endotoxin,
               reason="dilution factor not applied")
    assert set(lab.items(number).values()) == {"blocked"}
    # The pending sterility passing later does not lift the block nor finalise the release.
    lab.result(number, "sterility")
    assert lab.status(number) == "conditionally_released"
    assert set(lab.items(number).values()) == {"blocked"}
    with lab.tx() as s:
        kinds = [d.kind for d in services.decisions_of(s, number)]
    assert kinds == ["conditional_release", "failed_after_release"]


def test_conditional_release_is_shown_in_the_batch_record_exports(lab: Lab) -> None:
    import json

    from batches import export
    from tests.test_batches_export import pdf_text

    number = lab.ready(skip=("sterility",))
    lab.release(number, conditional=True, justification="relapse; sterility pending")
    with lab.tx() as s:
        data = json.loads(export.export_batch(s, number, "json")[0])
        pdf = export.export_batch(s, number, "pdf")[0]
    assert data["release"]["conditional"] is True
    assert data["release"]["conditional_release pending tests"] == "sterility"
    rows = {row["test"]: row for row in data["qc"]}
    assert rows["sterility"]["status"] == "pending" and rows["dose"]["status"] == "passed"
    text = " ".join(pdf_text(pdf).split())
    assert "conditionally_released" in text and "relapse; sterility pending" in text
    assert lab.qa.username in text  # the release signature's manifestation


def test_positive_after_release_with_bags_at_two_treatment_sites(lab: Lab, make_site,
                                                                make_user) -> None:
    from gmp_mes.alerts import list_alerts
    from gmp_mes.models import User
    from identity import services as identity
    from qc import services

    make_site("HOSP2", "treatment")
    number = lab.ready(skip=("sterility",), bags=2)
    lab.release(number, conditional=True, justification="clinical urgency")
    moved, _ = sorted(lab.items(number))
    with lab.tx(lab.plant.operator) as s:
        operator = s.get(User, lab.plant.operator.user_id)
        identity.record_custody(s, moved, action="ship", site="HOSP2", user=operator)
    # Received at HOSP2 by a user of HOSP2 (custody is recorded at the caller's site).
    nurse = make_user("nadia", "clinician", site="HOSP2")
    with lab.tx(nurse) as s:
        identity.record_custody(s, moved, action="receive", site="HOSP2",
                                user=s.get(User, nurse.user_id))
    lab.result(number, "sterility", fields={"outcome": "positive"})
    assert set(lab.items(number).values()) == {"blocked"}
    with lab.tx() as s:
        (alert,) = [a for a in list_alerts(s, kind=services.POSITIVE_AFTER_RELEASE)]
    assert alert.site_code is None  # every site: one row cannot name two
    assert "HOSP1" in alert.message and "HOSP2" in alert.message


@pytest.mark.requirement("EU GMP Annex 16 §1.7")
def test_rejecting_a_batch_before_its_consuming_step_rejects_the_starting_material(
    lab: Lab,
) -> None:
    from batches import services as batches
    from identity import services as identity
    from qc import services

    number = lab.plant.start()
    with lab.tx() as s:
        material = batches.get_batch(s, number).starting_item_id
        assert identity.get_item(s, material).status == "in_process"
    with lab.tx(lab.qa) as s:
        services.reject_batch(s, number, user_id=lab.qa.user_id,
                              signature=signed("rejected"), reason="donor consent withdrawn")
    with lab.tx() as s:
        item = identity.get_item(s, material)
        assert (item.status, item.batch_number) == ("rejected", number)


def test_the_batch_record_sections_keep_their_json_form(lab: Lab) -> None:
    """Issue 16: qc's services return typed results; the executed batch record still gets
    plain JSON with the record's own time format (``format_time``) and labelled lines."""
    import json

    from gmp_mes.audit import format_time
    from qc import services

    number = lab.ready(skip=("sterility",))
    lab.release(number, conditional=True, justification="urgent")
    with lab.tx() as s:
        sections = {x.key: x.data for x in services.batch_record_sections(s, number)}
        rows = {r.test: r for r in services.qc_overview(s, number)}
        signed_at = format_time(rows["endotoxin"].results[0].signature.signed_at)
        due_at = format_time(rows["sterility"].due_at)
    json.dumps(sections)  # JSON-ready, no model objects left
    qc = {row["test"]: row for row in sections["qc"]}
    assert qc["endotoxin"]["results"][0]["signature"]["signed_at"] == signed_at
    assert "batch_status" not in qc["endotoxin"]["results"][0]
    assert qc["sterility"]["due_at"] == due_at and qc["sterility"]["status"] == "pending"
    release = sections["release"]
    assert release["status"] == "conditionally_released" and release["conditional"] is True
    assert release["conditional_release signature"]["meaning"] == "released"
    assert release["conditional_release signature"]["signed_at"].endswith("Z")
