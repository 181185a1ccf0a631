"""Room bookings (SPEC §13): the windows computed from the process's ``[schedule]``, each
warning alone (figures by hand), overlapping bookings refused (also under concurrent
requests, and by the database itself), cancel and reschedule with their reason in the
audit trail, the batch started for a booked patient linked to its booking, bad input
answered with problem+json, and the pages."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from processes.definitions import load_file
from tests.conftest import ApiClient, sig
from tests.helpers import assert_problem
from tests.test_e2e_api import APHERESIS, HOSPITAL, PLANT, ok, payload
from tests.test_identity_pages import Browser

CONFIG = Path(__file__).resolve().parent.parent / "config" / "processes"
V7 = load_file(CONFIG / "cart-auto-v7.toml")
# CART-AUTO v7: manufacturing P12D, release P3D, sterility P7D (conditional release
# allowed), mycoplasma P1D, hold time PT48H, shelf life P270D, post-thaw PT3H.
DAY = timedelta(days=1)
APHERESIS_AT = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)
FILL = APHERESIS_AT + 12 * DAY


def _iso(at: datetime) -> str:
    return at.isoformat()


@pytest.fixture
def sched(app, db, make_site, make_user, login, tmp_path) -> dict[str, Any]:
    """Sites, people, CART-AUTO v7 and CART-SLOW (v7 with release P8D) approved, two
    grade B rooms and a grade C room, one enrolled patient."""
    from processes import services as processes

    make_site(PLANT, "manufacturing")
    make_site(APHERESIS, "collection")
    make_site(HOSPITAL, "treatment")
    people = {
        "clinician": make_user("carla", "clinician", site=HOSPITAL),
        "apheresis": make_user("april", "clinician", site=APHERESIS),
        "operator": make_user("otto", "operator"),
        "qa": make_user("quella", "qa"),
        "qc": make_user("quade", "qc"),
        "admin": make_user("ada", "admin"),
    }
    slow = tmp_path / "processes"
    slow.mkdir()
    source = (CONFIG / "cart-auto-v7.toml").read_text()
    source = source.replace('code = "CART-AUTO"', 'code = "CART-SLOW"', 1)
    source = source.replace('release = "P3D"', 'release = "P8D"', 1)
    (slow / "cart-slow-v1.toml").write_text(source.replace("\nversion = 7\n", "\nversion = 1\n"))
    with app.app_context(), db.transaction(actor=Actor.system("init")) as s:
        processes.load_process_definitions(s)
        processes.load_process_definitions(s, [slow])
    api = {role: login(person) for role, person in people.items()}
    for path in ("CART-AUTO/versions/7", "CART-SLOW/versions/1"):
        ok(api["qa"].post(f"/api/v1/processes/{path}/approve",
                          json={"signature": sig("approved")}), 200)
    for code, grade in (("GMP-B1", "B"), ("GMP-B2", "B"), ("GMP-C1", "C")):
        ok(api["admin"].post("/api/v1/rooms", json={"code": code, "site": PLANT,
                                                    "grade": grade, "name": f"Room {code}"}))
    patient = ok(api["clinician"].post("/api/v1/patients", json={
        "given_name": "Ada", "family_name": "Lovelace", "date_of_birth": "1985-12-10",
        "mrn": "MRN-0815", "treatment_site": HOSPITAL}))
    return {"api": api, "people": people, "coi": patient["coi_id"], "db": db, "app": app}


def _body(coi: str, *, infusion: datetime, room: str = "GMP-B1", process: str = "CART-AUTO",
          apheresis: datetime = APHERESIS_AT, start: datetime | None = None
          ) -> dict[str, Any]:
    body = {"coi_id": coi, "process_code": process, "room": room,
            "apheresis_at": _iso(apheresis), "planned_infusion_at": _iso(infusion)}
    if start is not None:
        body["manufacturing_start"] = _iso(start)
    return body


def _book(sched: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return ok(sched["api"]["clinician"].post("/api/v1/bookings",
                                             json=_body(sched["coi"], **kw)))


def _codes(booking: dict[str, Any]) -> list[str]:
    return [w["code"] for w in booking["warnings"]]


# --- the plan -----------------------------------------------------------------------------

@pytest.mark.requirement("SPEC §13")
def test_a_booking_carries_the_windows_of_its_process_version(sched) -> None:
    booking = _book(sched, infusion=FILL + 10 * DAY)
    assert booking["process_code"] == "CART-AUTO" and booking["process_version"] == 7
    assert booking["room"] == "GMP-B1" and booking["status"] == "booked"
    # By hand: start = apheresis (no start given), fill = start + 12 d, release = fill
    # + 3 d, expiry = fill + 270 d, earliest thaw = infusion - 3 h.
    assert datetime.fromisoformat(booking["manufacturing_start"]) == APHERESIS_AT
    assert datetime.fromisoformat(booking["manufacturing_end"]) == datetime(
        2027, 3, 13, 8, 0, tzinfo=UTC)
    assert datetime.fromisoformat(booking["release_expected"]) == datetime(
        2027, 3, 16, 8, 0, tzinfo=UTC)
    assert datetime.fromisoformat(booking["product_expires_at"]) == datetime(
        2027, 12, 8, 8, 0, tzinfo=UTC)
    assert datetime.fromisoformat(booking["thaw_from"]) == datetime(
        2027, 3, 23, 5, 0, tzinfo=UTC)
    assert booking["warnings"] == [] and booking["revision"] == 1
    assert booking["booked_by"] == "carla" and booking["batch_number"] is None
    again = ok(sched["api"]["qc"].get(f"/api/v1/bookings/{booking['id']}"), 200)
    assert again == booking


@pytest.mark.requirement("SPEC §13")
@pytest.mark.parametrize(("case", "process", "start", "infusion", "expected"), [
    # Start 49 h after the apheresis: 1 h past the 48 h hold time.
    ("hold", "CART-AUTO", APHERESIS_AT + timedelta(hours=49),
     APHERESIS_AT + timedelta(hours=49) + 20 * DAY, "hold_time_exceeded"),
    # Infusion 5 days after the fill: after the release (3 d), before sterility (7 d).
    ("qc", "CART-AUTO", None, FILL + 5 * DAY, "qc_result_after_infusion"),
    # CART-SLOW releases 8 days after the fill: an infusion at 7.5 days has every
    # result (sterility at 7 d) but not the release decision.
    ("release", "CART-SLOW", None, FILL + timedelta(days=7, hours=12),
     "release_after_infusion"),
    # An infusion 271 days after the fill: a day after the 270-day shelf life.
    ("expiry", "CART-AUTO", None, FILL + 271 * DAY, "expires_before_infusion"),
])
def test_each_warning_alone(sched, case, process, start, infusion, expected) -> None:
    booking = _book(sched, process=process, start=start, infusion=infusion)
    assert _codes(booking) == [expected], booking["warnings"]
    message = booking["warnings"][0]["message"]
    if case == "hold":
        assert "starts 1 h 0 min after the starting material's hold time (2 d 0 h after" in message
    if case == "qc":
        assert "sterility" in message and "mycoplasma" not in message
        assert "conditional release" in message
    if case == "release":
        assert "12 h 0 min after the planned infusion" in message
    if case == "expiry":
        assert "1 d 0 h before the planned infusion" in message


@pytest.mark.requirement("SPEC §13")
def test_a_warning_stops_at_its_boundary(sched) -> None:
    """At exactly the hold time, the release time and the result time nothing is late."""
    api = sched["api"]["clinician"]
    start = APHERESIS_AT + timedelta(hours=48)
    fill = start + 12 * DAY
    at_limits = ok(api.post("/api/v1/bookings", json=_body(
        sched["coi"], start=start, infusion=fill + 7 * DAY)))
    assert at_limits["warnings"] == []
    just_before = ok(api.post("/api/v1/bookings", json=_body(
        sched["coi"], room="GMP-B2", infusion=FILL + 7 * DAY - timedelta(minutes=1))))
    assert _codes(just_before) == ["qc_result_after_infusion"]


def _expected(start_h: int, infusion_h: int, release: timedelta) -> list[str]:
    """SPEC §13's warnings restated on hours after the apheresis (v7's figures)."""
    fill = start_h + 12 * 24
    codes = []
    if start_h > 48:
        codes.append("hold_time_exceeded")
    if fill + release.total_seconds() / 3600 > infusion_h:
        codes.append("release_after_infusion")
    if fill + 7 * 24 > infusion_h:  # sterility, the longest time to result
        codes.append("qc_result_after_infusion")
    if fill + 270 * 24 < infusion_h:
        codes.append("expires_before_infusion")
    return codes


@pytest.mark.requirement("SPEC §13")
@settings(max_examples=200, deadline=None)
@given(start_h=st.integers(0, 24 * 10), infusion_after_h=st.integers(1, 24 * 320),
       release_d=st.integers(1, 10))
def test_plan_warnings_match_the_rules_for_any_times(start_h: int, infusion_after_h: int,
                                                     release_d: int) -> None:
    from processes.definitions import ScheduleSpec
    from schedule.services import plan_booking

    assert V7.schedule is not None
    definition = replace(V7, schedule=ScheduleSpec(manufacturing=V7.schedule.manufacturing,
                                                   release=timedelta(days=release_d)))
    start = APHERESIS_AT + timedelta(hours=start_h)
    infusion = APHERESIS_AT + timedelta(hours=infusion_after_h)
    plan = plan_booking(definition, apheresis_at=APHERESIS_AT, planned_infusion_at=infusion,
                        manufacturing_start=start)
    assert list(plan.codes) == _expected(start_h, infusion_after_h, timedelta(days=release_d))
    assert plan.manufacturing_end - plan.manufacturing_start == timedelta(days=12)
    assert plan.release_expected - plan.manufacturing_end == timedelta(days=release_d)


# --- one room, one window -----------------------------------------------------------------

@pytest.mark.requirement("SPEC §13")
@pytest.mark.requirement("EU GMP Part IV 9.4")
def test_overlapping_windows_are_refused_adjacent_ones_and_other_rooms_are_not(sched) -> None:
    api = sched["api"]["clinician"]
    first = _book(sched, infusion=FILL + 10 * DAY)
    # The same room, starting a day before the first one's fill: 409 naming it.
    overlap = api.post("/api/v1/bookings", json=_body(
        sched["coi"], apheresis=FILL - DAY, infusion=FILL + 30 * DAY))
    problem = assert_problem(overlap, 409, "room_booked")
    assert f"booking {first['id']}" in problem["detail"] and problem["booking_id"] == first["id"]
    # Starting at the first one's fill (half-open windows) and in another room: booked.
    adjacent = _book(sched, apheresis=FILL, infusion=FILL + 30 * DAY)
    elsewhere = _book(sched, room="GMP-B2", apheresis=FILL - DAY, infusion=FILL + 30 * DAY)
    assert {adjacent["room"], elsewhere["room"]} == {"GMP-B1", "GMP-B2"}
    listed = ok(api.get("/api/v1/bookings?room=GMP-B1"), 200)
    assert [b["id"] for b in listed] == [first["id"], adjacent["id"]]
    # Cancelling the first frees its window.
    ok(api.post(f"/api/v1/bookings/{first['id']}/cancel", json={"reason": "patient unfit"}),
       200)
    ok(api.post("/api/v1/bookings", json=_body(
        sched["coi"], apheresis=FILL - 2 * DAY, infusion=FILL + 30 * DAY,
        room="GMP-B1")), 409)  # still overlaps the adjacent one
    freed = _book(sched, apheresis=APHERESIS_AT - DAY, infusion=FILL + 30 * DAY)
    assert freed["manufacturing_end"] < adjacent["manufacturing_start"] or \
        datetime.fromisoformat(freed["manufacturing_end"]) <= datetime.fromisoformat(
            adjacent["manufacturing_start"])


@pytest.mark.requirement("SPEC §13")
def test_concurrent_overlapping_bookings_one_wins_the_rest_get_room_booked(sched) -> None:
    attempts = 6
    app, token = sched["app"], sched["api"]["clinician"].token
    barrier = threading.Barrier(attempts)
    answers: list[Any] = [None] * attempts

    def book(n: int) -> None:
        api = ApiClient(app.test_client(), token)
        barrier.wait()
        # Each window starts n hours later than the first: every pair overlaps.
        response = api.post("/api/v1/bookings", json=_body(
            sched["coi"], apheresis=APHERESIS_AT + timedelta(hours=n),
            infusion=FILL + 20 * DAY))
        answers[n] = (response.status_code, response.get_json().get("code"))

    threads = [threading.Thread(target=book, args=(n,)) for n in range(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(answers, key=str) == sorted(
        [(201, None)] + [(409, "room_booked")] * (attempts - 1), key=str), answers
    with sched["db"].engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM room_booking")).scalar_one() == 1


@pytest.mark.requirement("SPEC §13")
@pytest.mark.requirement("Annex 11 §5")
def test_the_database_refuses_an_overlap_that_bypasses_the_service(sched) -> None:
    first = _book(sched, infusion=FILL + 10 * DAY)
    db = sched["db"]
    with db.engine.connect() as c:
        row = dict(c.execute(text("SELECT * FROM room_booking WHERE id = :i"),
                             {"i": first["id"]}).mappings().one())
    row.pop("id")
    columns = ", ".join(row)
    values = ", ".join(f":{k}" for k in row)
    with pytest.raises(DBAPIError, match=r"room_booked|ex_room_booking_overlap"), \
            db.engine.begin() as c:
        c.execute(text(f"INSERT INTO room_booking ({columns}) VALUES ({values})"), row)
    # Cancelled rows do not count; deleting a booking is refused.
    row["status"], row["cancelled_at"] = "cancelled", row["booked_at"]
    with db.engine.begin() as c:
        c.execute(text(f"INSERT INTO room_booking ({columns}) VALUES ({values})"), row)
    with pytest.raises(DBAPIError, match="refused"), db.engine.begin() as c:
        c.execute(text("DELETE FROM room_booking WHERE id = :i"), {"i": first["id"]})


# --- cancel and reschedule ----------------------------------------------------------------

def _trail(sched: dict[str, Any], booking_id: int) -> list[dict[str, Any]]:
    events = ok(sched["api"]["qa"].get(
        f"/api/v1/audit?entity_type=room_booking&entity_id={booking_id}"), 200)
    return sorted(events, key=lambda e: e["seq"])  # the API answers newest first


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_cancel_needs_a_reason_and_keeps_it_in_the_trail(sched) -> None:
    api = sched["api"]["operator"]
    booking = _book(sched, infusion=FILL + 10 * DAY)
    path = f"/api/v1/bookings/{booking['id']}/cancel"
    assert_problem(api.post(path, json={}), 422)
    assert_problem(api.post(path, json={"reason": ""}), 422)
    cancelled = ok(api.post(path, json={"reason": "apheresis postponed: infection"}), 200)
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"]
    assert cancelled["cancel_reason"] == "apheresis postponed: infection"
    assert_problem(api.post(path, json={"reason": "again"}), 409, "booking_cancelled")
    events = _trail(sched, booking["id"])
    assert [e["action"] for e in events] == ["create", "update"]
    assert events[-1]["reason"] == "apheresis postponed: infection"
    assert events[-1]["username"] == "otto"


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_reschedule_computes_the_plan_again_and_keeps_the_old_window_in_the_trail(
        sched) -> None:
    api = sched["api"]["clinician"]
    booking = _book(sched, infusion=FILL + 10 * DAY)
    other = _book(sched, room="GMP-B2", apheresis=FILL + 30 * DAY, infusion=FILL + 60 * DAY)
    path = f"/api/v1/bookings/{booking['id']}/reschedule"
    assert_problem(api.post(path, json={"planned_infusion_at": _iso(FILL)}), 422)  # no reason
    moved = ok(api.post(path, json={"reason": "infusion bed moved earlier",
                                    "planned_infusion_at": _iso(FILL + 5 * DAY)}), 200)
    assert moved["revision"] == 2 and _codes(moved) == ["qc_result_after_infusion"]
    assert moved["manufacturing_start"] == booking["manufacturing_start"]
    # A new apheresis time moves the start with it; into the other room's window: 409.
    clash = api.post(path, json={"reason": "room B1 closed", "room": "GMP-B2",
                                 "apheresis_at": _iso(FILL + 29 * DAY),
                                 "planned_infusion_at": _iso(FILL + 60 * DAY)})
    assert assert_problem(clash, 409, "room_booked")["booking_id"] == other["id"]
    later = ok(api.post(path, json={"reason": "apheresis postponed a week",
                                    "apheresis_at": _iso(APHERESIS_AT + 7 * DAY),
                                    "planned_infusion_at": _iso(FILL + 17 * DAY)}), 200)
    assert datetime.fromisoformat(later["manufacturing_start"]) == APHERESIS_AT + 7 * DAY
    assert later["revision"] == 3 and later["warnings"] == []
    events = _trail(sched, booking["id"])
    assert [e["reason"] for e in events[1:]] == ["infusion bed moved earlier",
                                                 "apheresis postponed a week"]
    first_update = events[1]["record"]
    record = first_update if isinstance(first_update, dict) else json.loads(first_update)
    assert "planned_infusion_at" in json.dumps(record)


# --- bad input ----------------------------------------------------------------------------

@pytest.mark.requirement("SPEC §13")
def test_bad_bookings_are_problems_naming_the_field(sched, db) -> None:
    api = sched["api"]["clinician"]
    good = _body(sched["coi"], infusion=FILL + 10 * DAY)

    def refused(status: int, field: str | None = None, code: str | None = None,
                **change: Any) -> None:
        problem = assert_problem(api.post("/api/v1/bookings", json={**good, **change}),
                                 status, code)
        if field is not None:
            assert field in json.dumps(problem.get("errors", {})), problem

    refused(422, "coi_id", coi_id="COI-NOBODY")
    refused(422, "room", room="NO-SUCH-ROOM")
    refused(422, "room", room="GMP-C1")  # grade C: the fill needs grade B
    refused(422, "process_code", process_code="NO-SUCH")
    refused(422, "planned_infusion_at", planned_infusion_at=_iso(APHERESIS_AT))
    refused(422, "manufacturing_start",
            manufacturing_start=_iso(APHERESIS_AT - timedelta(hours=1)))
    refused(422, "apheresis_at", apheresis_at="2027-03-01T08:00:00")  # no offset
    refused(422, "apheresis_at", apheresis_at="tomorrow")
    refused(422, "colour", colour="blue")
    assert_problem(sched["api"]["qc"].post("/api/v1/bookings", json=good), 403,
                   "forbidden_role")
    assert_problem(api.get("/api/v1/bookings/999999"), 404)
    assert_problem(api.get("/api/v1/bookings?from=2027-03-10&to=2027-03-01"), 422)
    assert_problem(api.get("/api/v1/bookings?status=maybe"), 422)


@pytest.mark.requirement("SPEC §13")
def test_a_process_without_schedule_or_approval_cannot_be_booked(sched, tmp_path) -> None:
    from processes import services as processes

    api = sched["api"]["clinician"]
    good = _body(sched["coi"], infusion=FILL + 10 * DAY)
    ok(sched["api"]["qa"].post("/api/v1/processes/CART-AUTO/versions/7/approve",
                               json={"signature": sig("approved")}), 409)  # already
    directory = tmp_path / "plain"
    directory.mkdir()
    plain = (CONFIG / "cart-auto-v6.toml").read_text().replace(
        'code = "CART-AUTO"', 'code = "CART-PLAIN"', 1).replace("\nversion = 6\n",
                                                                 "\nversion = 1\n")
    (directory / "cart-plain-v1.toml").write_text(plain)
    with sched["app"].app_context(), sched["db"].transaction(actor=Actor.system("init")) as s:
        processes.load_process_definitions(s, [directory])
    assert_problem(api.post("/api/v1/bookings", json={**good, "process_code": "CART-PLAIN"}),
                   409, "process_not_approved")
    ok(sched["api"]["qa"].post("/api/v1/processes/CART-PLAIN/versions/1/approve",
                               json={"signature": sig("approved")}), 200)
    problem = assert_problem(api.post("/api/v1/bookings", json={
        **good, "process_code": "CART-PLAIN"}), 422)
    assert "[schedule]" in problem["errors"]["process_code"][0]


def test_list_by_period_room_patient_and_status(sched) -> None:
    api = sched["api"]["clinician"]
    march = _book(sched, infusion=FILL + 10 * DAY)
    may = _book(sched, apheresis=datetime(2027, 5, 3, 8, tzinfo=UTC),
                infusion=datetime(2027, 6, 1, 8, tzinfo=UTC))
    ok(api.post(f"/api/v1/bookings/{may['id']}/cancel", json={"reason": "duplicate"}), 200)

    def ids(query: str) -> list[int]:
        return [b["id"] for b in ok(api.get(f"/api/v1/bookings?{query}"), 200)]

    assert ids("") == [march["id"], may["id"]]
    assert ids("from=2027-03-13&to=2027-03-13") == [march["id"]]  # the fill day
    assert ids("from=2027-03-14&to=2027-05-02") == []  # between the two windows
    assert ids("status=booked") == [march["id"]]
    assert ids(f"coi_id={sched['coi'].lower()}") == [march["id"], may["id"]]
    assert ids("room=GMP-B2") == []


# --- the batch started for a booked patient -------------------------------------------

def _start_batch(sched: dict[str, Any]) -> str:
    api = sched["api"]
    collection = ok(api["apheresis"].post("/api/v1/collections", json={
        "coi_id": sched["coi"], "collected_at": (utcnow() - timedelta(hours=1)).isoformat(),
        "site": APHERESIS, "volume_ml": 200.0}))
    starting = collection["item"]["item_id"]
    label = payload(api["apheresis"], starting)
    ok(api["apheresis"].post(f"/api/v1/items/{starting}/custody",
                             json={"action": "ship", "site": PLANT}))
    ok(api["operator"].post(f"/api/v1/items/{starting}/custody",
                            json={"action": "receive", "site": PLANT, "location": "fridge"}))
    batch = ok(api["operator"].post("/api/v1/batches", json={
        "item_id": label, "process_code": "CART-AUTO"}))
    return str(batch["batch_number"])


@pytest.mark.requirement("SPEC §13")
@pytest.mark.requirement("EU GMP Part IV 9.4")
def test_a_batch_started_for_a_booked_patient_links_to_its_booking(sched) -> None:
    api = sched["api"]
    now = utcnow()
    booking = _book(sched, apheresis=now - timedelta(hours=2), infusion=now + 30 * DAY)
    number = _start_batch(sched)
    linked = ok(api["clinician"].get(f"/api/v1/bookings/{booking['id']}"), 200)
    assert linked["batch_number"] == number
    # The room is in use: the booking can no longer be cancelled or moved.
    assert_problem(api["clinician"].post(f"/api/v1/bookings/{booking['id']}/cancel",
                                         json={"reason": "x"}), 409, "booking_in_use")
    assert_problem(api["clinician"].post(f"/api/v1/bookings/{booking['id']}/reschedule",
                                         json={"reason": "x"}), 409, "booking_in_use")
    record = api["qa"].get(f"/api/v1/batches/{number}/record.json")
    assert record.status_code == 200, record.get_data(as_text=True)[:300]
    sections = record.get_json()["sections"] if "sections" in record.get_json() else \
        record.get_json()
    assert f'"booking_id": {booking["id"]}' in json.dumps(sections)
    page = api["operator"].get(f"/batches/{number}")
    assert page.status_code == 200
    assert "Room booking" in page.get_data(as_text=True)


def test_a_second_batch_does_not_take_a_booking_already_linked(sched) -> None:
    from schedule import services

    now = utcnow()
    booking = _book(sched, apheresis=now - timedelta(hours=2), infusion=now + 30 * DAY)
    first = _start_batch(sched)
    from gmp_mes import registry

    with sched["app"].app_context(), sched["db"].transaction(actor=Actor.system("t")) as s:
        services.link_started_batch(s, registry.StartedBatch(
            batch_number=first, coi_id=sched["coi"], process_code="CART-AUTO",
            process_version=7, started_at=now))
        assert services.get_booking(s, booking["id"]).batch_number == first


# --- pages -------------------------------------------------------------------------------

@pytest.mark.requirement("SPEC §13")
def test_the_schedule_page_books_a_room_and_shows_the_warning(sched) -> None:
    web = Browser(sched["app"].test_client(), sched["people"]["clinician"])
    page = web.get("/schedule?from=2027-03-01&weeks=4")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="gantt"' in html and "No booking in these weeks" in html
    form = {"coi_id": sched["coi"], "process_code": "CART-AUTO", "room": "GMP-B1",
            "apheresis_at": "2027-03-01T09:00", "planned_infusion_at": "2027-03-18T09:00",
            "manufacturing_start": ""}
    refused = web.post("/schedule", {**form, "planned_infusion_at": "soon"})
    assert refused.status_code == 422
    assert "not a date and time" in refused.get_data(as_text=True)
    shown = web.post_follow("/schedule", form).get_data(as_text=True)
    assert 'data-warning="qc_result_after_infusion"' in shown
    assert "QC result after the planned infusion" in shown
    schedule = web.get("/schedule?from=2027-03-01&weeks=4").get_data(as_text=True)
    assert sched["coi"] in schedule and 'data-warning="qc_result_after_infusion"' in schedule
    overlap = web.post("/schedule", form)
    assert overlap.status_code == 409 and "is booked from" in overlap.get_data(as_text=True)
    patient = web.get(f"/patients/{sched['coi']}").get_data(as_text=True)
    assert 'id="patient-bookings"' in patient
    assert 'data-warning="qc_result_after_infusion"' in patient


def test_the_booking_page_cancels_with_a_reason(sched) -> None:
    booking = _book(sched, infusion=FILL + 10 * DAY)
    web = Browser(sched["app"].test_client(), sched["people"]["operator"])
    html = web.get(f"/bookings/{booking['id']}").get_data(as_text=True)
    assert 'id="cancel"' in html and 'id="reschedule"' in html
    assert web.post(f"/bookings/{booking['id']}/cancel", {"reason": ""}).status_code == 422
    after = web.post_follow(f"/bookings/{booking['id']}/cancel",
                            {"reason": "patient withdrew"}).get_data(as_text=True)
    assert "patient withdrew" in after and 'id="cancel"' not in after
    moved = web.post(f"/bookings/{booking['id']}/reschedule", {
        "reason": "again", "planned_infusion_at": "2027-04-01T09:00"})
    assert moved.status_code == 409
