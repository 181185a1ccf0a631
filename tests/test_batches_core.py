"""Batch manufacturing services: process approval, batches, steps, deviations, fill."""

from __future__ import annotations

import json
import re
import shutil
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

import processes.services as processes
from batches import services
from batches.models import StepRecord
from gmp_mes.clock import clock, utcnow
from gmp_mes.errors import (
    AlreadyExists,
    Conflict,
    Expired,
    InvalidTransition,
    SegregationOfDuties,
    SignatureRejected,
    ValidationFailed,
)
from gmp_mes.settings import CONFIG_DIR
from tests.conftest import PASSWORD
from tests.helpers import audit_events
from tests.test_batches_fixtures import Plant, good_values, plant_fixture, sign  # noqa: F401


def test_definitions_load_unapproved_and_reload_is_idempotent(app, db, make_user) -> None:
    qa = make_user("quinn", "qa")
    p = Plant(app, db, qa, qa, qa, qa)
    with p.tx(qa) as s:
        lines = processes.load_process_definitions(s)
    assert any("CART-AUTO/v1: loaded" in line for line in lines)
    with p.tx(qa) as s:
        lines = processes.load_process_definitions(s)
        assert lines == ["process CART-AUTO/v1: unchanged (awaiting QA approval)",
                         "process CART-AUTO/v2: unchanged (awaiting QA approval)",
                         "process CART-AUTO/v3: unchanged (awaiting QA approval)",
                         "process CART-AUTO/v4: unchanged (awaiting QA approval)",
                         "process CART-AUTO/v5: unchanged (awaiting QA approval)",
                         "process CART-AUTO/v6: unchanged (awaiting QA approval)",
                         "process CART-AUTO/v7: unchanged (awaiting QA approval)"]
        assert [v.approved for v in processes.list_processes(s)] == [False] * 7


@pytest.mark.requirement("EU GMP Chapter 4.3")
def test_changed_file_with_same_version_is_refused_naming_the_file(
    app, db, make_user, tmp_path: Path
) -> None:
    qa = make_user("quinn", "qa")
    p = Plant(app, db, qa, qa, qa, qa)
    with p.tx(qa) as s:
        processes.load_process_definitions(s)
    changed = tmp_path / "cart-auto-v1.toml"
    shutil.copy(CONFIG_DIR / "processes" / "cart-auto-v1.toml", changed)
    changed.write_text(changed.read_text().replace("min = 70.0", "min = 60.0"))
    with pytest.raises(processes.ProcessLoadError) as caught, p.tx(qa) as s:
        processes.load_process_definitions(s, [tmp_path])
    assert str(changed) in caught.value.detail
    assert "new version number" in caught.value.detail


def test_bad_file_loads_nothing(app, db, make_user, tmp_path: Path) -> None:
    qa = make_user("quinn", "qa")
    p = Plant(app, db, qa, qa, qa, qa)
    shutil.copy(CONFIG_DIR / "processes" / "cart-auto-v1.toml", tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text('code = "X"\nversion = 1\n')
    with pytest.raises(processes.ProcessLoadError, match=r"b\.toml"), p.tx(qa) as s:
        processes.load_process_definitions(s, [tmp_path])
    with p.tx(qa) as s:
        assert processes.list_processes(s) == []


@pytest.mark.requirement("EU GMP Chapter 4.3")
def test_unapproved_version_cannot_start_a_batch(app, db, make_user, make_site) -> None:
    from tests.test_batches_fixtures import APHERESIS, HOSPITAL

    make_site(APHERESIS, "collection")
    make_site(HOSPITAL, "treatment")
    op = make_user("olga", "operator")
    p = Plant(app, db, op, op, make_user("quinn", "qa"), make_user("clara", "clinician",
                                                                   site=HOSPITAL))
    with p.tx(p.qa) as s:
        processes.load_process_definitions(s)
    item = p.starting_material()
    with pytest.raises(Conflict) as caught, p.tx() as s:
        services.start_batch(s, item_id=item, user_id=op.user_id)
    assert caught.value.code == "process_not_approved"
    with pytest.raises(Conflict) as caught, p.tx() as s:
        services.start_batch(s, item_id=item, user_id=op.user_id, process_version=1)
    assert caught.value.code == "process_not_approved"


def test_approval_is_signed_once_by_qa(plant: Plant) -> None:
    with plant.tx(plant.qa) as s:
        version = processes.list_processes(s)[0]
        assert version.approved
        assert version.approval.signature.meaning == "approved"
        assert version.approval.signature.printed_name == "Quinn"
    with pytest.raises(InvalidTransition), plant.tx(plant.qa) as s:
        processes.approve_process(s, "CART-AUTO", 1, user_id=plant.qa.user_id,
                                 signature=sign(meaning="approved"))


def test_batch_numbers_are_human_readable_and_sequential(plant: Plant) -> None:
    first, second = plant.start(), plant.start()
    year = f"{utcnow():%y}"
    assert first == f"CART-{year}-0001" and second == f"CART-{year}-0002"
    batch = plant.batch(first)
    assert (batch.status, batch.process_code, batch.process_version) == (
        "in_process", "CART-AUTO", 1)


@pytest.mark.requirement("SPEC §3 hold time")
def test_expired_starting_material_cannot_start_a_batch(plant: Plant) -> None:
    item = plant.starting_material(collected_hours_ago=47)
    clock.freeze(utcnow() + timedelta(hours=1, seconds=1))
    with pytest.raises(Expired), plant.tx() as s:
        services.start_batch(s, item_id=item, user_id=plant.operator.user_id)


def test_one_active_batch_per_starting_material(plant: Plant) -> None:
    item = plant.starting_material()
    number = plant.start(item)
    with pytest.raises(AlreadyExists, match=number), plant.tx() as s:
        services.start_batch(s, item_id=item, user_id=plant.operator.user_id)


def test_database_refuses_a_second_active_batch_for_one_starting_material(plant: Plant) -> None:
    number = plant.start()
    with pytest.raises(DBAPIError), plant.db.engine.begin() as c:
        c.execute(text(
            "INSERT INTO batch (batch_number, coi_id, process_version_id, process_code, "
            "process_version, starting_item_id, site_code, status, started_at, started_by) "
            "SELECT 'X-1', coi_id, process_version_id, process_code, process_version, "
            "starting_item_id, site_code, 'on_hold', started_at, started_by FROM batch "
            "WHERE batch_number = :n"), {"n": number})


@pytest.mark.requirement("SPEC §3 step order")
@pytest.mark.requirement("21 CFR 11.10(f)")
def test_out_of_order_step_is_refused(plant: Plant) -> None:
    number = plant.start()
    with pytest.raises(InvalidTransition, match=r"out of order.*receipt"):
        plant.record(number, "selection")
    plant.record(number, "receipt")
    with pytest.raises(InvalidTransition, match="already recorded"):
        plant.record(number, "receipt")
    with pytest.raises(InvalidTransition, match="out of order"):
        plant.record(number, "transduction")
    plant.record(number, "selection")


def test_repeatable_step_runs_until_the_next_step_starts(plant: Plant) -> None:
    number = plant.start()
    for code in ("receipt", "selection", "activation", "transduction"):
        plant.record(number, code)
    for _ in range(3):
        plant.record(number, "expansion")
    plant.record(number, "harvest")
    with pytest.raises(InvalidTransition, match="out of order"):
        plant.record(number, "expansion")
    with plant.tx() as s:
        records = services.current_records(s, services.get_batch(s, number))
        assert [r.occurrence for r in records if r.step_code == "expansion"] == [1, 2, 3]


@pytest.mark.requirement("21 CFR 11.10(g)")
def test_critical_step_needs_a_second_person(plant: Plant) -> None:
    number = plant.start()
    with pytest.raises(ValidationFailed) as caught:
        plant.record(number, "receipt", verifier=False)
    assert "verifier" in caught.value.errors
    step = plant.definition(number).step("receipt")
    with pytest.raises(SegregationOfDuties), plant.tx() as s:
        services.record_step(
            s, number, "receipt", values=good_values(step), user_id=plant.operator.user_id,
            signature=sign(), verifier=services.VerifierInput(plant.operator.username, PASSWORD))
    with pytest.raises(SignatureRejected), plant.tx() as s:
        services.record_step(
            s, number, "receipt", values=good_values(step), user_id=plant.operator.user_id,
            signature=sign(), verifier=services.VerifierInput(plant.operator2.username, "nope"))
    outcome = plant.record(number, "receipt")
    assert outcome.record.verifier_signature.username == plant.operator2.username
    assert outcome.record.verifier_signature.meaning == "verified"


def test_wrong_password_records_nothing(plant: Plant) -> None:
    number = plant.start()
    step = plant.definition(number).step("receipt")
    with pytest.raises(SignatureRejected), plant.tx() as s:
        services.record_step(s, number, "receipt", values=good_values(step),
                             user_id=plant.operator.user_id, signature=sign("wrong"))
    with plant.tx() as s:
        assert services.current_records(s, services.get_batch(s, number)) == []


ENTRY_ERRORS = [
    ({"temperature_c": "4"}, "values.temperature_c", "must be a number"),
    ({"temperature_c": {"value": 4, "unit": "K"}}, "values.temperature_c", "unit must be '°C'"),
    ({"temperature_c": float("nan")}, "values.temperature_c", "finite"),
    ({"coi_verified": 1}, "values.coi_verified", "true or false"),
    ({"temp": 4}, "values.temp", "unknown parameter"),
    ({}, "values.volume_ml", "missing required value"),
]


def test_entry_errors_are_422_with_the_field(plant: Plant) -> None:
    """One database for all cases: each refusal rolls back and leaves nothing behind."""
    number = plant.start()
    for values, field, message in ENTRY_ERRORS:
        full = good_values(plant.definition(number).step("receipt"))
        full.update(values)
        if not values:
            full.pop("volume_ml")
        with pytest.raises(ValidationFailed) as caught:
            plant.record(number, "receipt", full)
        assert any(message in m for m in caught.value.errors[field]), caught.value.errors
    with plant.tx() as s:
        assert services.current_records(s, services.get_batch(s, number)) == []


def test_value_with_matching_unit_is_accepted(plant: Plant) -> None:
    number = plant.start()
    values = good_values(plant.definition(number).step("receipt"))
    values["temperature_c"] = {"value": 5, "unit": "°C"}
    outcome = plant.record(number, "receipt", values)
    assert outcome.record.values["temperature_c"] == 5


@pytest.mark.requirement("EU GMP Chapter 1.4(xiv)")
def test_out_of_limit_value_is_recorded_as_entered_opens_deviation_and_holds(
    plant: Plant,
) -> None:
    number = plant.start()
    plant.run_to(number, "transduction")
    step = plant.definition(number).step("expansion")
    values = good_values(step)
    values["viability_pct"] = 55.5
    outcome = plant.record(number, "expansion", values)
    assert outcome.record.values["viability_pct"] == 55.5  # never clamped
    assert not outcome.record.in_limits
    [deviation] = outcome.deviations
    assert (deviation.kind, deviation.severity, deviation.status) == ("automatic", "major", "open")
    assert "55.5 %" in deviation.description and "70 - 100 %" in deviation.description
    assert plant.batch(number).status == "on_hold"
    # manufacturing goes on while QA assesses (the cells do not wait)
    plant.record(number, "expansion")
    with plant.tx(plant.qa) as s:
        assert ("open_deviation" in
                [code for code, _ in services.release_blockers(s, number)])
        services.assess_deviation(s, deviation.number, assessment="Counting error suspected; "
                                  "recount within limits", user_id=plant.qa.user_id,
                                  signature=sign(meaning="reviewed"))
    assert plant.batch(number).status == "in_process"
    with plant.tx(plant.qa) as s:
        # assessed but not closed: still blocks release (SPEC §5.3)
        assert "open_deviation" in [c for c, _ in services.release_blockers(s, number)]
        services.close_deviation(s, deviation.number, closure="No impact; CAPA-12 retraining",
                                 user_id=plant.qa.user_id, signature=sign(meaning="approved"))
        assert "open_deviation" not in [c for c, _ in services.release_blockers(s, number)]


def test_minor_deviation_does_not_hold(plant: Plant) -> None:
    number = plant.start()
    values = good_values(plant.definition(number).step("receipt"))
    values["volume_ml"] = 20.0  # severity = "minor" in the definition
    outcome = plant.record(number, "receipt", values)
    assert outcome.deviations[0].severity == "minor"
    assert plant.batch(number).status == "in_process"


def test_manual_deviation_and_qa_only_decisions(plant: Plant) -> None:
    number = plant.start()
    with plant.tx() as s:
        deviation = services.open_deviation(
            s, number, severity="critical", description="Biosafety cabinet alarm during "
            "selection", step_code="selection", user_id=plant.operator.user_id)
        ref = deviation.number
    assert re.fullmatch(rf"{number}-D01", ref)
    assert plant.batch(number).status == "on_hold"
    from gmp_mes.errors import Forbidden

    with pytest.raises(Forbidden), plant.tx() as s:
        services.assess_deviation(s, ref, assessment="x", user_id=plant.operator.user_id,
                                  signature=sign(meaning="reviewed"))
    with pytest.raises(InvalidTransition), plant.tx(plant.qa) as s:
        services.close_deviation(s, ref, closure="x", user_id=plant.qa.user_id,
                                 signature=sign(meaning="approved"))


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_correction_keeps_the_original(plant: Plant) -> None:
    number = plant.start()
    step = plant.definition(number).step("receipt")
    original = plant.record(number, "receipt").record
    values = good_values(step)
    values["temperature_c"] = 6.5
    with plant.tx() as s:
        outcome = services.correct_step(
            s, number, "receipt", values=values, reason="transcription error: 6.5 not 5",
            user_id=plant.operator.user_id, signature=sign(),
            verifier=services.VerifierInput(plant.operator2.username, PASSWORD))
        corrected_key = outcome.record.key
    with plant.tx() as s:
        batch = services.get_batch(s, number)
        every = services.all_records(s, batch)
        assert [(r.version, r.values["temperature_c"]) for r in every] == [
            (1, original.values["temperature_c"]), (2, 6.5)]
        assert every[1].supersedes_id == every[0].id
        assert every[1].correction_reason == "transcription error: 6.5 not 5"
        [current] = services.current_records(s, batch)
        assert current.version == 2
    events = [e for e in audit_events(plant.db, entity_type="step_record")
              if e["entity_id"] == corrected_key]
    assert events and events[0]["reason"] == "correction: transcription error: 6.5 not 5"
    with pytest.raises(ValidationFailed), plant.tx() as s:
        services.correct_step(s, number, "receipt", values=values, reason=" ",
                              user_id=plant.operator.user_id, signature=sign())


@pytest.mark.requirement("EU GMP Annex 11 §9")
def test_step_records_are_append_only_in_the_database(plant: Plant) -> None:
    number = plant.start()
    plant.record(number, "receipt")
    for statement in ("UPDATE step_record SET values_json = '{}'", "DELETE FROM step_record",
                      "DELETE FROM batch", "UPDATE process_version SET definition = '{}'"):
        with pytest.raises(DBAPIError), plant.db.engine.begin() as c:
            c.execute(text(statement))


@pytest.mark.requirement("SPEC §3 fill")
def test_fill_creates_bags_in_quarantine_with_genealogy_and_expiry(plant: Plant) -> None:
    from identity import services as identity

    number = plant.start()
    plant.run_to(number, "harvest", expansion_days=1)
    values = good_values(plant.definition(number).step("fill"))
    values["bags"] = 3
    clock.freeze(utcnow())
    outcome = plant.record(number, "fill", values)
    ids = [i.item_id for i in outcome.items]
    assert len(ids) == 3 and outcome.record.item_ids == ids
    with plant.tx() as s:
        assert services.final_product_item_ids(s, number) == ids
        batch = services.get_batch(s, number)
        for item_id in ids:
            item = identity.get_item(s, item_id)
            assert (item.kind, item.status, item.coi_id, item.batch_number) == (
                "final_product", "quarantine", batch.coi_id, number)
            assert item.expires_at == utcnow() + timedelta(days=270)
            assert item.expiry_warnings == "PT24H,PT4H" and item.post_thaw_window == "PT3H"
            assert identity.parents_of(s, item_id) == [batch.starting_item_id]


def test_bags_must_be_a_sensible_whole_number(plant: Plant) -> None:
    number = plant.start()
    plant.run_to(number, "harvest", expansion_days=1)
    for bags in (0, -1, 2.5, "two", True, 21):
        values = good_values(plant.definition(number).step("fill"))
        values["bags"] = bags
        with pytest.raises(ValidationFailed) as caught:
            plant.record(number, "fill", values)
        assert "values.bags" in caught.value.errors, bags


def test_complete_batch_awaits_release_and_interface_functions(plant: Plant) -> None:
    number = plant.start()
    plant.run_to(number)
    with plant.tx(plant.qa) as s:
        batch = services.get_batch(s, number)
        assert batch.status == "awaiting_release" and batch.completed_at is not None
        assert services.release_blockers(s, number) == []
        assert services.batch_performers(s, number) == {plant.operator.user_id,
                                                        plant.operator2.user_id}
        assert plant.qa.user_id not in services.batch_performers(s, number)
        specs = services.qc_specs(s, number)
        assert {q.test for q in specs} >= {"sterility", "endotoxin"}
        assert services.batch_coi(s, number) == batch.coi_id
        with pytest.raises(InvalidTransition):
            services.record_step(s, number, "cryopreservation", values={},
                                 user_id=plant.operator.user_id, signature=sign())


def test_release_blockers_of_an_incomplete_batch(plant: Plant) -> None:
    number = plant.start()
    with plant.tx(plant.qa) as s:
        [(code, message)] = services.release_blockers(s, number)
    assert code == "steps_incomplete" and "receipt" in message


def test_expired_final_product_blocks_release(plant: Plant) -> None:
    number = plant.start()
    plant.run_to(number, expansion_days=1)
    clock.freeze(utcnow() + timedelta(days=271))
    with plant.tx(plant.qa) as s:
        assert [c for c, _ in services.release_blockers(s, number)] == ["expired"]


def test_status_machine_final_states_never_change(plant: Plant) -> None:
    number = plant.start()
    with pytest.raises(InvalidTransition), plant.tx(plant.qa) as s:
        services.set_batch_status(s, number, "released")
    plant.run_to(number, expansion_days=1)
    with plant.tx(plant.qa) as s:
        services.set_batch_status(s, number, "conditionally_released", reason="sterility "
                                  "pending")
        services.set_batch_status(s, number, "released", reason="sterility negative")
    for status in ("released", "rejected", "in_process", "on_hold", "conditionally_released"):
        with pytest.raises(InvalidTransition), plant.tx(plant.qa) as s:
            services.set_batch_status(s, number, status)
    with plant.tx() as s:
        deviation = services.open_deviation(s, number, severity="major",
                                            description="found after release",
                                            user_id=plant.operator.user_id)
        assert deviation.status == "open"
    assert plant.batch(number).status == "released"


def test_starting_material_hold_time_interface(plant: Plant) -> None:
    with plant.tx() as s:
        hold, warn = processes.starting_material_hold_time(s)
        assert hold == timedelta(hours=48) and warn == ("PT24H", "PT4H")
        assert processes.starting_material_hold_time(s, "CART-AUTO") == (hold, warn)


def test_hold_time_before_anything_is_loaded_reads_the_files(app, db) -> None:
    with app.app_context(), db.transaction() as s:
        assert processes.starting_material_hold_time(s)[0] == timedelta(hours=48)


def test_two_operators_recording_the_same_step_at_once(plant: Plant) -> None:
    """Real threads, one session each: exactly one record of the step, the other refused."""
    number = plant.start()
    plant.record(number, "receipt")
    step = plant.definition(number).step("selection")
    results: list[str] = []
    barrier = threading.Barrier(2)

    def worker(person) -> None:
        barrier.wait()
        try:
            with plant.tx(person) as s:
                services.record_step(s, number, "selection", values=good_values(step),
                                     user_id=person.user_id, signature=sign())
            results.append("ok")
        except (InvalidTransition, DBAPIError) as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=worker, args=(p,))
               for p in (plant.operator, plant.operator2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["InvalidTransition", "ok"]
    with plant.tx() as s:
        records = services.current_records(s, services.get_batch(s, number))
        assert [r.step_code for r in records] == ["receipt", "selection"]


def test_every_change_is_audited(plant: Plant) -> None:
    number = plant.start()
    plant.record(number, "receipt")
    kinds = {(e["entity_type"], e["action"]) for e in audit_events(plant.db)}
    assert {("batch", "create"), ("step_record", "create"), ("signature", "create"),
            ("process_approval", "create"), ("process_version", "create")} <= kinds
    record = audit_events(plant.db, entity_type="step_record")[0]
    assert json.loads(record["record"])["new"]["batch_number"] == number
    assert StepRecord.__tablename__ == "step_record"


def test_concurrent_batch_starts(plant: Plant) -> None:
    """Real threads: distinct starting materials get distinct numbers; one starting
    material started twice at once gives one batch and one refusal."""
    items = [plant.starting_material(), plant.starting_material()]
    shared = plant.starting_material()
    results: list[str] = []
    lock = threading.Lock()

    def start(item_id: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            with plant.tx() as s:
                number = services.start_batch(s, item_id=item_id,
                                              user_id=plant.operator.user_id).batch_number
            outcome = number
        except (Conflict, DBAPIError) as exc:
            outcome = type(exc).__name__
        with lock:
            results.append(outcome)

    for targets in (items, [shared, shared]):
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=start, args=(i, barrier)) for i in targets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    numbers = [r for r in results if r.startswith("CART-")]
    assert len(numbers) == 3 and len(set(numbers)) == 3, results
    assert len(results) == 4


def test_deviation_open_too_long_raises_one_alert(plant: Plant) -> None:
    from gmp_mes.scheduler import run_jobs

    number = plant.start()
    with plant.tx() as s:
        ref = services.open_deviation(s, number, severity="major", description="late",
                                      user_id=plant.operator.user_id).number
    clock.freeze(utcnow() + timedelta(days=6))
    assert not [c for c in run_jobs(plant.app).changes if ref in c]
    clock.advance(timedelta(days=1, seconds=1))
    assert [c for c in run_jobs(plant.app).changes if ref in c] == [
        f"alert: deviation {ref} open too long"]
    assert not [c for c in run_jobs(plant.app).changes if ref in c]  # one alert per cause
    with plant.db.engine.connect() as c:
        rows = c.execute(text("SELECT kind, severity, roles FROM alert WHERE subject_id = :r"),
                         {"r": ref}).all()
    assert [tuple(r) for r in rows] == [("deviation_open", "major", "qa")]
