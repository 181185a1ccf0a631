"""One lock order everywhere (issue 13): the safety actions never deadlock with scans.

Six scanner threads scan the bags of a batch over the API while QA releases it, a
positive result arrives after its conditional release, or a 100-label reprint sheet
of its items prints. Before the audit-chain lock was taken last (at commit), these
failed on PostgreSQL with 503 after seconds of stalled writers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask

from gmp_mes import registry
from gmp_mes.audit import Actor, verify_chain
from gmp_mes.db import Database
from tests.conftest import ApiClient, sig
from tests.helpers import assert_problem, count
from tests.test_identity_fixtures import world_fixture  # noqa: F401 - fixture
from tests.test_qc_fixtures import (  # noqa: F401 - fixtures
    Lab,
    lab_fixture,
    plant_fixture,
)

SCANNERS = 6
WARM_UP = 2  # scans per scanner before the operation starts, and again after it ends


def _postgresql_only(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("SQLite serialises every writer on one lock: no row locks, no deadlock")


def _payloads(lab: Lab, item_ids: list[str]) -> list[str]:
    from labels import services as labels

    with lab.plant.app.app_context(), lab.plant.db.transaction(
        actor=Actor.system("test")
    ) as s:
        return [labels.payload_for_item(s, item_id) for item_id in item_ids]


class Scanners:
    """Threads that scan the same bags over and over until stopped."""

    def __init__(self, app: Flask, token: str, payloads: list[str], batch_number: str) -> None:
        self.app, self.token, self.payloads, self.batch = app, token, payloads, batch_number
        self.answers: list[list[tuple[int, Any]]] = [[] for _ in range(SCANNERS)]
        self.stop = threading.Event()
        self.warm = threading.Barrier(SCANNERS + 1)
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(SCANNERS)]

    def _run(self, n: int) -> None:
        api = ApiClient(self.app.test_client(), self.token)
        answers = self.answers[n]
        try:
            i = n
            while True:
                body = {"payload": self.payloads[i % len(self.payloads)],
                        "workstation": f"SCAN-{n}", "batch_number": self.batch}
                response = api.post("/api/v1/scans", json=body)
                answers.append((response.status_code, response.get_json()))
                i += 1
                if len(answers) == WARM_UP:
                    self.warm.wait(timeout=120)
                if self.stop.is_set() and len(answers) >= self.stopped_at[n] + WARM_UP:
                    return
        except BaseException as error:  # reported by the test, never swallowed
            self.errors.append(error)
            self.warm.abort()

    @contextmanager
    def running(self) -> Iterator[None]:
        for thread in self.threads:
            thread.start()
        self.warm.wait(timeout=120)  # every scanner is scanning
        try:
            yield
        finally:
            # Each scanner scans a few more times after the operation, so its scans
            # overlap the whole operation.
            self.stopped_at = [len(a) for a in self.answers]
            self.stop.set()
            for thread in self.threads:
                thread.join(timeout=300)

    def check(self) -> int:
        assert not self.errors, self.errors
        assert not any(t.is_alive() for t in self.threads)
        statuses = [status for answers in self.answers for status, _ in answers]
        assert statuses and set(statuses) == {200}, [
            (s, b) for answers in self.answers for s, b in answers if s != 200][:5]
        return len(statuses)


def _scanning(lab: Lab, login: Callable[..., ApiClient], number: str,
              item_ids: list[str]) -> Scanners:
    token = login(lab.plant.operator2).token
    return Scanners(lab.plant.app, token, _payloads(lab, item_ids), number)


def _custody_scans(db: Database) -> int:
    from sqlalchemy import text

    with db.engine.connect() as c:
        return c.execute(text("SELECT count(*) FROM custody_event WHERE action = 'scan'")
                         ).scalar_one()


def _chain_intact(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    with db.engine.connect() as c:
        result = verify_chain(c)
    assert result.ok, result.message()
    # Not even a deadlock that the retry at the request boundary would have hidden.
    retried = [r.getMessage() for r in caplog.records if "concurrent update" in r.getMessage()]
    assert not retried, retried


@pytest.mark.requirement("SPEC §5")
def test_qa_release_while_six_threads_scan_the_bags(lab: Lab, login, db, caplog) -> None:
    _postgresql_only(db)
    number = lab.ready(bags=6)
    bags = list(lab.items(number))
    scanners = _scanning(lab, login, number, bags)
    qa = login(lab.qa)
    with scanners.running():
        response = qa.post(f"/api/v1/batches/{number}/release",
                           json={"signature": sig("released")})
    assert response.status_code == 201, response.get_json()
    scans = scanners.check()
    assert set(lab.items(number).values()) == {"released"}
    assert _custody_scans(db) == scans
    _chain_intact(db, caplog)


@pytest.mark.requirement("SPEC §5 (result after conditional release)")
def test_positive_result_after_conditional_release_while_scanning(
    lab: Lab, login, db, caplog
) -> None:
    _postgresql_only(db)
    number = lab.ready(skip=("sterility",), bags=6)
    lab.release(number, conditional=True, justification="rapidly progressing ALL")
    bags = list(lab.items(number))
    scanners = _scanning(lab, login, number, bags)
    analyst = login(lab.analyst)
    with scanners.running():
        response = analyst.post(f"/api/v1/batches/{number}/qc-results", json={
            "test": "sterility", "outcome": "positive", "signature": sig()})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["passed"] is False
    scanners.check()
    assert set(lab.items(number).values()) == {"blocked"}
    alerts = login(lab.qa).get("/api/v1/alerts?status=open").get_json()
    assert [a["kind"] for a in alerts].count("qc_positive_after_release") == 1
    _chain_intact(db, caplog)


def test_hundred_label_reprint_sheet_while_scanning(lab: Lab, login, db, caplog) -> None:
    _postgresql_only(db)
    from identity import services as identity
    from labels import services as labels

    number = lab.ready(bags=20)
    bags = list(lab.items(number))
    with lab.tx(lab.plant.operator) as s:
        coi_id = identity.get_item(s, bags[0]).coi_id
        site = identity.get_item(s, bags[0]).site_code
        samples = [identity.create_item(s, kind="retention_sample", coi_id=coi_id,
                                        site_code=site, status="available",
                                        batch_number=number).item_id for _ in range(80)]
    items = bags + samples
    with lab.tx(lab.plant.operator) as s:  # the originals: the sheet is a reprint
        labels.print_sheet(s, items, labels.PrintRequest(format="pdf"),
                           user_id=lab.plant.operator.user_id)
    prints = count(db, "label_print")
    scanners = _scanning(lab, login, number, bags)
    operator = login(lab.plant.operator)
    with scanners.running():
        response = operator.get("/api/v1/labels/sheet", query_string={
            "items": ",".join(items), "reprint": "true", "reason": "sheet jammed"})
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/pdf" and response.data.startswith(b"%PDF")
    scanners.check()
    assert count(db, "label_print") == prints + 100
    _chain_intact(db, caplog)


# --- slow work outside the write transaction ---------------------------------------------

def _assert_no_write_lock(db: Database, table: str, column: str, keys: list[str]) -> None:
    """Called from inside a request: nobody holds the SQLite writer lock, and on
    PostgreSQL the rows are not locked (a NOWAIT lock from another connection succeeds)."""
    from sqlalchemy import text

    from gmp_mes import db as db_module

    if db.dialect == "sqlite":
        assert not db_module._writer_owners, "the SQLite writer lock is held"
        return
    with db.engine.connect() as c:
        c.execute(text(f"SELECT 1 FROM {table} WHERE {column} = ANY(:keys) FOR UPDATE NOWAIT"),
                  {"keys": keys})
        c.rollback()


def test_label_sheet_renders_after_its_prints_are_committed(lab: Lab, login, db,
                                                            monkeypatch) -> None:
    from labels import render

    number = lab.ready(bags=3)
    bags = list(lab.items(number))
    original = render.render_pdf_sheet
    rendered: list[int] = []

    def render_sheet(views: Any, paper: str) -> bytes:
        _assert_no_write_lock(db, "item", "item_id", bags)
        assert count(db, "label_print") == len(bags)  # the prints are already committed
        rendered.append(len(views))
        return original(views, paper)

    monkeypatch.setattr(render, "render_pdf_sheet", render_sheet)
    response = login(lab.plant.operator).get("/api/v1/labels/sheet",
                                             query_string={"items": ",".join(bags)})
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.data.startswith(b"%PDF") and rendered == [3]


def test_signer_passwords_are_checked_before_the_write_transaction(lab: Lab, login, db,
                                                                   monkeypatch) -> None:
    from gmp_mes import signatures

    plant = lab.plant

    def at_critical_step() -> tuple[str, Any]:
        number = plant.start()
        steps = plant.definition(number).steps
        first_critical = next(i for i, s in enumerate(steps) if s.critical)
        if first_critical:
            plant.run_to(number, steps[first_critical - 1].code)
        return number, steps[first_critical]

    number, step = at_critical_step()
    other, _ = at_critical_step()
    original = signatures.check_password
    checks: list[bool] = []

    def check(stored: str | None, password: str) -> bool:
        _assert_no_write_lock(db, "batch", "batch_number", [number, other])
        checks.append(original(stored, password))
        return checks[-1]

    monkeypatch.setattr(signatures, "check_password", check)
    body = {"values": _good(step), "signature": sig(),
            "verifier": {"username": plant.operator2.username,
                         "password": plant.operator2.password}}
    response = login(plant.operator).post(f"/api/v1/batches/{number}/steps/{step.code}",
                                          json=body)
    assert response.status_code == 201, response.get_json()
    assert checks == [True, True]  # performer and verifier, each hashed once, before
    checks.clear()
    body["verifier"]["password"] = "wrong-password-1"
    response = login(plant.operator).post(f"/api/v1/batches/{other}/steps/{step.code}",
                                          json=body)
    assert response.status_code == 401, response.get_json()
    assert checks == [True, False]  # no second hashing under the lock for the refusal


def _good(step: Any) -> dict[str, Any]:
    from tests.test_batches_fixtures import good_values

    return good_values(step)


# --- concurrent enrolment of one MRN -----------------------------------------------------

def test_losing_concurrent_enrolments_get_already_enrolled_with_the_coi(world, app,
                                                                         login) -> None:
    from tests.test_identity_fixtures import TREATMENT

    token = login(world.clinician).token
    body = {"given_name": "Ada", "family_name": "Lovelace", "date_of_birth": "1970-05-17",
            "mrn": "RACE-0001", "treatment_site": TREATMENT}
    attempts = 6
    barrier = threading.Barrier(attempts)
    answers: list[Any] = [None] * attempts

    def enrol(n: int) -> None:
        api = ApiClient(app.test_client(), token)
        barrier.wait()
        response = api.post("/api/v1/patients", json=body)
        answers[n] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=enrol, args=(n,)) for n in range(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    created = [a for status, a in answers if status == 201]
    assert len(created) == 1, answers
    losers = [(status, a.get("code"), a.get("coi_id")) for status, a in answers if status != 201]
    assert losers == [(409, "already_enrolled", created[0]["coi_id"])] * (attempts - 1), answers
    assert count(world.db, "patient") == 1


# --- a deadlock that still happens: retried once, then its own problem ------------------

class _Deadlock(Exception):
    sqlstate = "40P01"


def _deadlock() -> Exception:
    from sqlalchemy.exc import OperationalError

    return OperationalError("UPDATE item ...", {}, _Deadlock("deadlock detected"))


def _failing(original: Callable[..., Any], times: int) -> Callable[..., Any]:
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        result = original(*args, **kwargs)  # the work is done, then the transaction fails
        if calls["n"] <= times:
            raise _deadlock()
        return result

    wrapper.calls = calls  # type: ignore[attr-defined]
    return wrapper


def test_a_deadlocked_request_is_run_once_more(world, login, monkeypatch) -> None:
    from identity import services as identity
    from tests.test_identity_fixtures import PLANT

    patient = world.enrol()
    bag = world.item(patient["coi_id"], site=PLANT)
    scans_before = count(world.db, "custody_event")
    wrapper = _failing(identity.scan, 1)
    monkeypatch.setattr(identity, "scan", wrapper)
    api = login(world.operator)
    response = api.post("/api/v1/scans", json={"payload": world.payload(bag), "workstation": "S1"},
                        headers={"Idempotency-Key": "retry-1"})
    assert response.status_code == 200 and response.get_json()["ok"] is True
    assert wrapper.calls["n"] == 2
    # The first attempt was rolled back whole: one scan recorded, the key kept once.
    assert count(world.db, "custody_event") == scans_before + 1
    assert count(world.db, "idempotency_key") == 1


def test_a_second_deadlock_is_concurrent_update_not_database_unavailable(
    world, login, monkeypatch
) -> None:
    from identity import services as identity
    from tests.test_identity_fixtures import PLANT

    patient = world.enrol()
    bag = world.item(patient["coi_id"], site=PLANT)
    scans_before = count(world.db, "custody_event")
    monkeypatch.setattr(identity, "scan", _failing(identity.scan, 2))
    response = login(world.operator).post("/api/v1/scans",
                                          json={"payload": world.payload(bag), "workstation": "S1"})
    problem = assert_problem(response, 503, "concurrent_update")
    assert "try again" in problem["detail"] and response.headers["Retry-After"] == "1"
    assert count(world.db, "custody_event") == scans_before


def test_a_deadlocked_scheduler_job_is_run_once_more(app) -> None:
    from gmp_mes.scheduler import run_jobs

    runs: list[int] = []

    def job(_app: Flask) -> list[str]:
        runs.append(1)
        if len(runs) == 1:
            raise _deadlock()
        return ["swept"]

    registry.of(app).jobs = [job]
    result = run_jobs(app)
    assert result.changes == ["swept"] and result.failed == [] and len(runs) == 2
