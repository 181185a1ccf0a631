# ruff: noqa: F811  (the pytest fixture `people` imported from tests.test_e2e_api)
"""The patient timeline (SPEC §13): the end-to-end path through the API on a controlled
clock (enrol -> collect -> batch -> fill -> QC -> release -> ship -> receive -> thaw ->
administer), each milestone the system's time of its event, the durations between them,
the vein-to-vein time; which batch and bag count when there are several; 404; the patient
page's section."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest

from gmp_mes.clock import clock, utcnow
from gmp_mes.durations import parse_duration
from tests.conftest import sig
from tests.helpers import assert_problem, trail_time
from tests.test_e2e_api import (
    APHERESIS,
    HOSPITAL,
    PLANT,
    ok,
    passing,
    payload,
    people,  # noqa: F401 - fixture
    step_body,
)

MILESTONES = ["enrolled", "collected", "batch_started", "filled", "released", "shipped",
              "received", "thawed", "administered"]


@pytest.fixture(autouse=True)
def _long_tokens(app_config: dict[str, Any]) -> None:
    # The path spans weeks of the frozen clock; a bearer token lives 8 hours by default.
    app_config["token_ttl_minutes"] = 60 * 24 * 90


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def _same(text: str | None, at: datetime) -> bool:
    return text is not None and datetime.fromisoformat(text) == at


class Path:
    """Drives one patient along the path through the API, the clock advanced by hand
    before each event; ``at`` keeps the time of each milestone as it happened."""

    def __init__(self, people: dict[str, Any], db: Any) -> None:
        self.people = people
        self.at: dict[str, datetime] = {}
        self.labels: dict[str, str] = {}  # item -> its label's payload (printed once)
        start = max(utcnow(), trail_time(db)) + timedelta(seconds=1)
        clock.freeze(start.replace(microsecond=0))

    def label(self, item_id: str, api: Any = None) -> str:
        if item_id not in self.labels:
            self.labels[item_id] = payload(api or self.people["operator"], item_id)
        return self.labels[item_id]

    def wait(self, **delta: float) -> datetime:
        clock.advance(timedelta(**delta))
        return utcnow()

    def enrol(self) -> tuple[str, str]:
        self.people["qa"].post("/api/v1/processes/CART-AUTO/versions/1/approve",
                               json={"signature": sig("approved")})
        self.at["enrolled"] = self.wait(minutes=1)
        patient = ok(self.people["clinician"].post("/api/v1/patients", json={
            "given_name": "Ada", "family_name": "Lovelace", "date_of_birth": "1985-12-10",
            "mrn": "MRN-0815", "treatment_site": HOSPITAL}))
        return patient["coi_id"], patient["wristband_item_id"]

    def collect(self, coi_id: str, *, hours_later: float = 2) -> str:
        # The apheresis took place an hour before the collection was entered.
        now = self.wait(hours=hours_later)
        collected = now - timedelta(hours=1)
        self.at.setdefault("collected", collected)
        collection = ok(self.people["clinician"].post("/api/v1/collections", json={
            "coi_id": coi_id, "collected_at": _iso(collected), "site": APHERESIS,
            "volume_ml": 210.0}))
        starting = collection["item"]["item_id"]
        self.label(starting, self.people["apheresis"])
        self.wait(minutes=30)
        ok(self.people["apheresis"].post(f"/api/v1/items/{starting}/custody",
                                         json={"action": "ship", "site": PLANT}))
        self.wait(hours=3)
        ok(self.people["operator"].post(f"/api/v1/items/{starting}/custody",
                                        json={"action": "receive", "site": PLANT,
                                              "location": "SM fridge"}))
        return starting

    def manufacture(self, starting: str, *, bags: int = 1) -> tuple[str, list[str]]:
        operator, verifier = self.people["operator"], self.people["verifier_person"]
        started = self.wait(hours=12)
        batch = ok(operator.post("/api/v1/batches", json={
            "item_id": self.label(starting), "process_code": "CART-AUTO"}))
        self.at["batch_started"] = started
        number, created = batch["batch_number"], []
        for step in batch["steps"]:
            body = step_body(step, bags=bags, scan=self.label(starting), verifier=verifier)
            when = self.wait(days=1)
            outcome = ok(operator.post(f"/api/v1/batches/{number}/steps/{step['code']}",
                                       json=body))
            if step["creates"] == "final_product":
                self.at["filled"] = when
            created += [item["item_id"] for item in outcome["items"]]
        return number, created

    def release(self, number: str) -> None:
        analyst = self.people["analyst"]
        for test in ok(analyst.get(f"/api/v1/batches/{number}/qc"), 200)["tests"]:
            self.wait(hours=6)
            ok(analyst.post(f"/api/v1/batches/{number}/qc-results", json={
                "test": test["test"], **passing(test), "signature": sig()}))
        self.at["released"] = self.wait(days=2)
        ok(self.people["qa"].post(f"/api/v1/batches/{number}/release",
                                  json={"signature": sig("released")}))

    def deliver(self, bag: str) -> None:
        operator, clinician = self.people["operator"], self.people["clinician"]
        self.at["shipped"] = self.wait(hours=20)
        ok(operator.post(f"/api/v1/items/{bag}/custody",
                         json={"action": "ship", "site": HOSPITAL}))
        self.at["received"] = self.wait(hours=26, minutes=15)
        ok(clinician.post(f"/api/v1/items/{bag}/custody",
                          json={"action": "receive", "site": HOSPITAL, "location": "LN2-1"}))
        self.at["thawed"] = self.wait(days=3)
        ok(clinician.post(f"/api/v1/items/{bag}/custody",
                          json={"action": "thaw", "site": HOSPITAL}))

    def administer(self, wristband: str, bag: str) -> None:
        clinician = self.people["clinician"]
        patient, product = self.label(wristband, clinician), self.label(bag)
        self.at["administered"] = self.wait(minutes=40)
        ok(clinician.post("/api/v1/administrations", json={
            "patient_payload": patient, "product_payload": product,
            "signature": sig("administered")}))


def timeline(api: Any, coi_id: str) -> dict[str, Any]:
    return ok(api.get(f"/api/v1/patients/{coi_id}/timeline"), 200)


@pytest.mark.requirement("SPEC §13")
@pytest.mark.requirement("21 CFR 11.10(e)")
def test_the_timeline_of_the_end_to_end_path(people: dict[str, Any], db: Any) -> None:
    path = Path(people, db)
    coi_id, wristband = path.enrol()
    reader = people["operator"]
    first = timeline(reader, coi_id)
    assert _same(first["milestones"]["enrolled"], path.at["enrolled"])
    assert {k for k, v in first["milestones"].items() if v is None} == set(MILESTONES[1:])
    assert first["vein_to_vein"] is None and first["batch_number"] is None
    starting = path.collect(coi_id)
    number, (bag,) = path.manufacture(starting)
    halfway = timeline(reader, coi_id)
    assert halfway["batch_number"] == number and halfway["batch_status"] == "awaiting_release"
    assert halfway["milestones"]["released"] is None and halfway["vein_to_vein"] is None
    path.release(number)
    path.deliver(bag)
    path.administer(wristband, bag)

    answer = timeline(people["qa"], coi_id)
    assert set(answer["milestones"]) == set(MILESTONES)  # a JSON object: the order is
    # in ``durations``, a list
    for name in MILESTONES:  # each the system's time of its event, to the microsecond
        assert _same(answer["milestones"][name], path.at[name]), (name, answer["milestones"])
    assert answer["coi_id"] == coi_id and answer["batch_number"] == number
    assert (answer["process_code"], answer["process_version"]) == ("CART-AUTO", 1)
    assert answer["batch_status"] == "released"
    # Collection to administration, computed here from the times the path kept.
    expected = path.at["administered"] - path.at["collected"]
    assert answer["vein_to_vein_seconds"] == expected.total_seconds()
    assert parse_duration(answer["vein_to_vein"]) == expected  # ISO 8601, e.g. P12DT3H
    pairs = [(d["from"], d["to"]) for d in answer["durations"]]
    assert pairs == list(pairwise(MILESTONES))
    for d in answer["durations"]:
        assert d["seconds"] == (path.at[d["to"]] - path.at[d["from"]]).total_seconds()
    received = next(d for d in answer["durations"] if d["to"] == "received")
    assert received["duration"] == "P1DT2H15M" and received["seconds"] == 94500.0
    thawed = next(d for d in answer["durations"] if d["to"] == "thawed")
    assert thawed["duration"] == "P3D"


def test_the_timeline_follows_the_administered_batch_and_the_first_of_each_event(
        people: dict[str, Any], db: Any) -> None:
    """Two collections and two batches: the first batch's two bags, one infused. The
    clock runs from the first collection; the milestones are the infused batch's, and the
    first ship of either bag; a later second batch (started after) does not take over."""
    path = Path(people, db)
    coi_id, wristband = path.enrol()
    starting = path.collect(coi_id)
    number, (infused, spare) = path.manufacture(starting, bags=2)
    path.release(number)
    path.deliver(spare)  # the spare bag ships first: its shipment is the first
    at = dict(path.at)
    path.deliver(infused)
    path.administer(wristband, infused)
    collected = path.at["collected"]
    later = path.collect(coi_id, hours_later=1)  # a second collection, a second batch
    second, _ = path.manufacture(later)
    answer = timeline(people["clinician"], coi_id)
    assert answer["batch_number"] == number != second
    assert _same(answer["milestones"]["collected"], collected)
    assert _same(answer["milestones"]["shipped"], at["shipped"])
    assert _same(answer["milestones"]["received"], at["received"])
    assert _same(answer["milestones"]["thawed"], at["thawed"])
    assert _same(answer["milestones"]["administered"], path.at["administered"])
    assert answer["vein_to_vein_seconds"] == (path.at["administered"] - collected
                                              ).total_seconds()


def test_without_an_infusion_the_latest_batch_is_shown(people: dict[str, Any], db: Any) -> None:
    path = Path(people, db)
    coi_id, _ = path.enrol()
    number, _ = path.manufacture(path.collect(coi_id))
    ok(people["qa"].post(f"/api/v1/batches/{number}/reject",
                         json={"signature": sig("rejected"), "reason": "viability too low"}))
    second, _ = path.manufacture(path.collect(coi_id, hours_later=1))
    answer = timeline(people["operator"], coi_id)
    assert answer["batch_number"] == second and answer["batch_status"] == "awaiting_release"
    assert _same(answer["milestones"]["batch_started"], path.at["batch_started"])
    assert answer["milestones"]["released"] is None and answer["vein_to_vein"] is None
    durations = {d["to"]: d for d in answer["durations"]}
    assert durations["released"]["seconds"] is None
    assert durations["released"]["duration"] is None


def test_unknown_patient_is_a_404_problem(people: dict[str, Any]) -> None:
    answer = people["operator"].get("/api/v1/patients/A999926ZZZZZZ1/timeline")
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert_problem(answer, 404, "not_found")


def test_the_timeline_needs_a_login(anonymous: Any, people: dict[str, Any]) -> None:
    assert_problem(anonymous.get("/api/v1/patients/A999926000001X/timeline"), 401)


def test_the_patient_page_shows_the_timeline(people: dict[str, Any], db: Any,
                                             client: Any) -> None:
    path = Path(people, db)
    coi_id, _ = path.enrol()
    number, _ = path.manufacture(path.collect(coi_id))
    page = _page(client, people, f"/patients/{coi_id}")
    assert 'id="timeline"' in page and f'data-batch="{number}"' in page
    assert 'data-milestone="filled"' in page and "not yet administered" in page
    assert "not yet" in page.split('data-milestone="released"')[1].split("</tr>")[0]


def _page(client: Any, people: dict[str, Any], url: str) -> str:
    from tests.test_pages_core import page_login

    page_login(client, people["verifier_person"])
    response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    return response.get_data(as_text=True)


def test_span_text_reads_as_people_read_durations() -> None:
    from schedule.pages import span_text

    assert span_text(timedelta(days=20, hours=1, minutes=5)) == "20 d 1 h"
    assert span_text(timedelta(hours=3, minutes=7)) == "3 h 7 min"
    assert span_text(timedelta(seconds=20)) == "0 min"
    assert span_text(-timedelta(minutes=30)) == "-30 min"
    assert span_text(None) == ""
