"""Idempotent POSTs (SPEC §7): a repeat with the same Idempotency-Key writes nothing new."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from gmp_mes import registry
from gmp_mes.clock import utcnow
from tests.conftest import ApiClient, sig
from tests.helpers import assert_problem, count
from tests.test_batches_fixtures import Plant, good_values, plant_fixture  # noqa: F401
from tests.test_identity_fixtures import PLANT, TREATMENT, World, world_fixture  # noqa: F401

KEY = {"Idempotency-Key": "3f1c9a52-7e0b-4d7c-9a61-2b8e4f0c1d11"}


def _written(db: Any) -> tuple[int, int]:
    return count(db, "custody_event"), count(db, "audit_event")


def _same_answer(first: Any, again: Any) -> None:
    assert again.status_code == first.status_code
    assert again.get_json() == first.get_json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert first.headers.get("Idempotent-Replayed") is None


@pytest.mark.requirement("SPEC §7 (Idempotency-Key)")
def test_repeated_scan_writes_once(world: World, login) -> None:
    patient = world.enrol()
    bag = world.item(patient["coi_id"], site=PLANT)
    api = login(world.operator)
    body = {"payload": world.payload(bag), "workstation": "SCAN-1"}
    before = _written(world.db)
    first = api.post("/api/v1/scans", json=body, headers=KEY)
    assert first.status_code == 200 and first.get_json()["ok"] is True
    after = _written(world.db)
    assert after == (before[0] + 1, before[1] + 1)  # one custody row, its audit event
    again = api.post("/api/v1/scans", json=body, headers=KEY)
    _same_answer(first, again)
    assert _written(world.db) == after
    # Another key is another scan; the same key from another user too.
    assert api.post("/api/v1/scans", json=body, headers={"Idempotency-Key": "k2"}
                    ).status_code == 200
    assert login(world.qa).post("/api/v1/scans", json=body, headers=KEY).status_code == 200
    assert _written(world.db) == (after[0] + 2, after[1] + 2)
    # Without a key every POST is new.
    api.post("/api/v1/scans", json=body)
    assert _written(world.db)[0] == after[0] + 3


def test_same_key_for_another_request_is_refused(world: World, login) -> None:
    patient = world.enrol()
    bag = world.item(patient["coi_id"], site=PLANT)
    api = login(world.operator)
    body = {"payload": world.payload(bag), "workstation": "SCAN-1"}
    assert api.post("/api/v1/scans", json=body, headers=KEY).status_code == 200
    written = _written(world.db)
    problem = assert_problem(
        api.post("/api/v1/scans", json={**body, "workstation": "SCAN-2"}, headers=KEY),
        422, "idempotency_key_reused")
    assert "new key" in problem["detail"]
    assert_problem(api.post(f"/api/v1/items/{bag}/custody", json={
        "action": "move", "site": PLANT, "location": "LN2-1"}, headers=KEY),
        422, "idempotency_key_reused")
    assert_problem(api.post("/api/v1/scans", json=body, headers={"Idempotency-Key": ""}),
                   400, "idempotency_key_invalid")
    assert_problem(api.post("/api/v1/scans", json=body,
                            headers={"Idempotency-Key": "x" * 201}),
                   400, "idempotency_key_invalid")
    assert _written(world.db) == written


@pytest.mark.requirement("SPEC §7 (Idempotency-Key)")
def test_repeated_custody_event_writes_once(world: World, login) -> None:
    patient = world.enrol()
    bag = world.item(patient["coi_id"], site=PLANT)
    api = login(world.operator)
    body = {"action": "move", "site": PLANT, "location": "LN2-TANK-3"}
    before = _written(world.db)
    first = api.post(f"/api/v1/items/{bag}/custody", json=body, headers=KEY)
    assert first.status_code == 201, first.get_json()
    after = _written(world.db)
    assert after[0] == before[0] + 1 and after[1] > before[1]
    _same_answer(first, api.post(f"/api/v1/items/{bag}/custody", json=body, headers=KEY))
    assert _written(world.db) == after


@pytest.mark.requirement("SPEC §7 (Idempotency-Key)")
def test_repeated_administration_writes_once(world: World, login) -> None:
    patient = world.enrol()
    bag = world.item(patient["coi_id"], site=TREATMENT, expires_at=utcnow() + timedelta(days=30))
    api = login(world.clinician)
    body = {"patient_payload": world.payload(patient["wristband_item_id"]),
            "product_payload": world.payload(bag), "signature": sig("administered")}
    before = _written(world.db)
    first = api.post("/api/v1/administrations", json=body, headers=KEY)
    assert first.status_code == 201, first.get_json()
    after = _written(world.db)
    records = (count(world.db, "administration"), count(world.db, "bedside_verification"),
               count(world.db, "signature"))
    assert after[0] == before[0] + 1 and records == (1, 1, 1)
    again = api.post("/api/v1/administrations", json=body, headers=KEY)
    _same_answer(first, again)
    assert _written(world.db) == after
    assert (count(world.db, "administration"), count(world.db, "bedside_verification"),
            count(world.db, "signature")) == records
    # Without the key the retry is a new request: refused, and its verdict recorded.
    assert_problem(api.post("/api/v1/administrations", json=body), 409, "already_administered")
    assert count(world.db, "bedside_verification") == 2


def test_a_refusal_is_kept_with_its_follow_up(world: World, login) -> None:
    patient = world.enrol()
    other = world.enrol()
    bag = world.item(other["coi_id"], site=TREATMENT, expires_at=utcnow() + timedelta(days=30))
    api = login(world.clinician)
    body = {"patient_payload": world.payload(patient["wristband_item_id"]),
            "product_payload": world.payload(bag), "signature": sig("administered")}
    first = assert_problem(api.post("/api/v1/administrations", json=body, headers=KEY),
                           409, "bedside_mismatch")
    verdicts, written = count(world.db, "bedside_verification"), _written(world.db)
    assert verdicts == 1
    again = api.post("/api/v1/administrations", json=body, headers=KEY)
    assert again.status_code == 409 and again.get_json() == first
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(world.db, "bedside_verification") == verdicts and _written(world.db) == written


@pytest.mark.requirement("SPEC §7 (Idempotency-Key)")
def test_repeated_step_record_writes_once(plant: Plant, login) -> None:
    number = plant.start()
    step = plant.definition(number).steps[0]
    body: dict[str, Any] = {"values": good_values(step), "signature": sig()}
    if step.critical:
        body["verifier"] = {"username": plant.operator2.username,
                            "password": plant.operator2.password}
    api = login(plant.operator)
    path = f"/api/v1/batches/{number}/steps/{step.code}"
    first = api.post(path, json=body, headers=KEY)
    assert first.status_code == 201, first.get_json()
    written = (count(plant.db, "step_record"), count(plant.db, "signature"),
               count(plant.db, "audit_event"))
    _same_answer(first, api.post(path, json=body, headers=KEY))
    assert (count(plant.db, "step_record"), count(plant.db, "signature"),
            count(plant.db, "audit_event")) == written


def test_concurrent_duplicates_write_once(world: World, app, login) -> None:
    patient = world.enrol()
    bag = world.item(patient["coi_id"], site=PLANT)
    token = login(world.operator).token
    body = {"payload": world.payload(bag), "workstation": "SCAN-1"}
    before = _written(world.db)
    barrier = threading.Barrier(4)
    answers: list[Any] = [None] * 4

    def attempt(n: int) -> None:
        api = ApiClient(app.test_client(), token)
        barrier.wait()
        response = api.post("/api/v1/scans", json=body, headers=KEY)
        answers[n] = (response.status_code, response.get_json(),
                      response.headers.get("Idempotent-Replayed"))

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert _written(world.db) == (before[0] + 1, before[1] + 1)
    winners = [a for a in answers if a[2] is None]
    assert len(winners) == 1 and winners[0][0] == 200, answers
    for status, answer, _replayed in answers:
        # The others got the winner's answer, or were told it was still in progress.
        assert (status, answer) == winners[0][:2] or (
            status == 409 and answer["code"] == "idempotency_in_progress"), answers


def test_openapi_documents_the_header_on_every_post(client) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    posts = [(path, ops["post"]) for path, ops in spec["paths"].items() if "post" in ops]
    assert len(posts) > 10
    for path, post in posts:
        names = [p.get("name") for p in post.get("parameters", [])]
        assert "Idempotency-Key" in names, path


@pytest.mark.requirement("21 CFR 11.300(a)")
def test_a_one_time_password_answer_is_never_stored(world: World, login, make_user) -> None:
    """A password reset retried with its key is not carried out again, and the one-time
    password it answered with is nowhere in the stored answers."""
    admin = login(make_user("adm", "admin"))
    make_user("olga2", "operator")
    first = admin.post("/api/v1/users/olga2/password-reset", headers=KEY)
    assert first.status_code == 201, first.get_json()
    secret = first.get_json()["one_time_password"]
    audit_before = count(world.db, "audit_event")
    again = admin.post("/api/v1/users/olga2/password-reset", headers=KEY)
    assert_problem(again, 409, "idempotency_answer_not_kept")
    assert count(world.db, "audit_event") == audit_before
    from sqlalchemy import text

    with world.db.engine.connect() as c:
        bodies = c.execute(text("SELECT coalesce(body, '') FROM idempotency_key")).scalars().all()
    assert bodies and not any(secret in body for body in bodies)


def test_keys_are_forgotten_after_a_week(world: World, app, login) -> None:
    from gmp_mes.clock import clock
    from gmp_mes.idempotency import purge_job

    patient = world.enrol()
    bag = world.item(patient["coi_id"], site=PLANT)
    api = login(world.operator)
    body = {"payload": world.payload(bag), "workstation": "SCAN-1"}
    clock.freeze(utcnow())
    assert api.post("/api/v1/scans", json=body, headers=KEY).status_code == 200
    clock.advance(timedelta(days=6))
    assert purge_job(app) == [] and count(world.db, "idempotency_key") == 1
    clock.advance(timedelta(days=1, seconds=1))
    assert purge_job(app) == ["idempotency: 1 key(s) older than 7 days forgotten"]
    assert count(world.db, "idempotency_key") == 0
    assert purge_job in registry.of(app).jobs
