"""Follow-up after the infusion (SPEC §16, issue 21): visits planned at the administration
from the process's `[follow_up]`, their states, one overdue alert per visit, signed
records with the computed CRS/ICANS grades, corrections kept as versions."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import sig
from tests.helpers import assert_problem
from tests.test_outcomes_fixtures import (  # noqa: F401 - fixtures
    Ward,
    lab_fixture,
    plant_fixture,
    record_body,
    ward_fixture,
)

CONFIG = Path(__file__).parent.parent / "config" / "processes"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


# --- the definition ------------------------------------------------------------------------

def _v1_with(follow_up: dict | None) -> dict:
    data = tomllib.loads((CONFIG / "cart-auto-v1.toml").read_text())
    if follow_up is not None:
        data["follow_up"] = follow_up
    return data


@pytest.mark.requirement("SPEC §16")
def test_follow_up_is_parsed_and_in_the_canonical_document_only_when_declared() -> None:
    from processes.definitions import from_canonical, load_file, parse_definition

    for path in sorted(CONFIG.glob("*.toml")):
        # Older versions' stored documents, hence their digests, do not change (v6 is the
        # first to declare visits).
        if load_file(path).version < 6:
            assert "follow_up" not in load_file(path).raw
    definition = parse_definition(_v1_with({"visits": ["P28D", "P4W2D", "P365D"],
                                            "long_term_years": 15}), "test")
    assert definition.follow_up is not None
    assert definition.follow_up.visits == ("P28D", "P30D", "P365D")  # normalised
    assert definition.follow_up.window == timedelta(days=14)  # the documented default
    assert definition.raw["follow_up"] == {"visits": ["P28D", "P30D", "P365D"],
                                           "long_term_years": 15}
    again = from_canonical(definition.raw)
    assert again.follow_up == definition.follow_up and again.digest == definition.digest


@pytest.mark.parametrize(("follow_up", "field"), [
    ({"visits": []}, "follow_up.visits"),
    ({"visits": ["P100D", "P28D"]}, "follow_up.visits[1]"),
    ({"visits": ["P28D", "soon"]}, "follow_up.visits[1]"),
    ({"visits": ["P28D"], "long_term_years": 1.5}, "follow_up.long_term_years"),
    ({"visits": ["P400D"], "long_term_years": 1}, "follow_up.long_term_years"),
    ({"visits": ["P28D"], "window": "PT0S"}, "follow_up.window"),
    ({"visits": ["P28D"], "every": "P1D"}, "follow_up.every"),
])
def test_a_bad_follow_up_table_is_refused_naming_the_field(follow_up: dict, field: str) -> None:
    from processes.definitions import ProcessDefinitionError, parse_definition

    with pytest.raises(ProcessDefinitionError) as refused:
        parse_definition(_v1_with(follow_up), "test")
    assert field in [name for name, _ in refused.value.errors]


# Pure (no database); the machine is shared, so slow generation is not the test's failure.
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(days=st.lists(st.integers(1, 3000), min_size=1, max_size=6, unique=True),
       years=st.integers(0, 30),
       at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1),
                       timezones=st.just(UTC)))
def test_the_plan_is_in_due_order_each_visit_once(days: list[int], years: int,
                                                  at: datetime) -> None:
    from outcomes.services import plan
    from processes.definitions import FollowUp

    days.sort()
    if years and 365 * years <= days[-1]:
        years = 0
    follow_up = FollowUp(visits=tuple(f"P{d}D" for d in days), long_term_years=years)
    planned = plan(follow_up, at)
    dues = [p.due_at for p in planned]
    assert dues == sorted(dues) and len(set(dues)) == len(dues)
    assert len({p.visit for p in planned}) == len(planned)
    assert [p.due_at - at for p in planned[:len(days)]] == [timedelta(days=d) for d in days]
    assert all(p.overdue_at - p.due_at == follow_up.window for p in planned)
    if years:
        assert planned[-1].visit == f"P{years}Y"


# --- visits scheduled at the administration ----------------------------------------------

@pytest.mark.requirement("SPEC §16")
def test_visits_are_scheduled_at_administration(ward: Ward, login) -> None:
    api = login(ward.clinician)
    coi, number, bag = ward.infused(api)
    at = ward.administered_at(bag)
    answer = api.get(f"/api/v1/patients/{coi}/follow-up")
    assert answer.status_code == 200, answer.get_json()
    visits = answer.get_json()["visits"]
    assert [v["visit"] for v in visits] == ["P28D", "P100D", "P1Y", "P2Y", "P3Y"]
    assert [v["label"] for v in visits] == ["Day 28", "Day 100", "Year 1", "Year 2", "Year 3"]
    assert {v["batch_number"] for v in visits} == {number}
    assert {v["state"] for v in visits} == {"due"}
    due = [datetime.fromisoformat(v["due_at"]) for v in visits]
    assert due[0] == at + timedelta(days=28) and due[1] == at + timedelta(days=100)
    assert due[2] == at.replace(year=at.year + 1)
    assert datetime.fromisoformat(visits[0]["overdue_at"]) == due[0] + timedelta(days=7)


def test_a_process_without_follow_up_schedules_nothing(lab, login) -> None:
    from tests.test_outcomes_fixtures import Ward

    ward = Ward(lab)  # v1 only: no [follow_up]
    api = login(ward.clinician)
    coi, _, _ = ward.infused(api)
    answer = api.get(f"/api/v1/patients/{coi}/follow-up")
    assert answer.status_code == 200 and answer.get_json()["visits"] == []


@pytest.mark.requirement("SPEC §16")
def test_an_overdue_visit_raises_one_alert_and_recording_it_acknowledges(
    ward: Ward, login
) -> None:
    from sqlalchemy import select

    from gmp_mes.alerts import Alert
    from gmp_mes.clock import clock, utcnow
    from outcomes import sweep

    api = login(ward.clinician)
    coi, _, bag = ward.infused(api)
    at = ward.administered_at(bag)
    with ward.tx() as s:  # day 34: due, inside the window
        assert sweep.sweep(s, at + timedelta(days=34)) == []
    later = at + timedelta(days=36)
    for expected in (1, 0):  # a second sweep raises nothing new
        with ward.tx() as s:
            assert len(sweep.sweep(s, later)) == expected
    with ward.tx() as s:
        (alert,) = s.scalars(select(Alert).where(Alert.kind == "follow_up_overdue"))
        assert alert.status == "open" and coi in alert.message and "Day 28" in alert.message
        assert alert.site_code == "HOSP1"
    clock.freeze(max(utcnow(), later))
    api = login(ward.clinician)  # the earlier token expired on the way
    states = {v["visit"]: v["state"]
              for v in api.get(f"/api/v1/patients/{coi}/follow-up").get_json()["visits"]}
    assert states == {"P28D": "overdue", "P100D": "due", "P1Y": "due", "P2Y": "due",
                      "P3Y": "due"}
    answer = api.post(f"/api/v1/patients/{coi}/follow-up",
                      json=record_body(assessed_at=_iso(at + timedelta(days=35))))
    assert answer.status_code == 201, answer.get_json()
    with ward.tx() as s:
        assert s.get(Alert, alert.id).status == "acknowledged"
        assert sweep.sweep(s, later) == []
    states = {v["visit"]: v["state"]
              for v in api.get(f"/api/v1/patients/{coi}/follow-up").get_json()["visits"]}
    assert states["P28D"] == "done"


# --- records -----------------------------------------------------------------------------

@pytest.mark.requirement("SPEC §16")
@pytest.mark.requirement("21 CFR 11.10(e)")
def test_grades_are_computed_and_a_correction_keeps_the_original(ward: Ward, login, db) -> None:
    from sqlalchemy import text

    from outcomes import services

    api = login(ward.clinician)
    coi, number, bag = ward.infused(api)
    now = _iso(ward.administered_at(bag) + timedelta(minutes=1))
    body = record_body(assessed_at=now, response="PR",
                       crs={"fever": True, "hypotension": "none", "hypoxia": "low_flow"},
                       icans={"ice_score": 8})
    first = api.post(f"/api/v1/patients/{coi}/follow-up", json=body)
    assert first.status_code == 201, first.get_json()
    record = first.get_json()
    assert record["crs_grade"] == 2 and record["icans_grade"] == 1  # Table 4, Table 5
    assert record["version"] == 1 and record["batch_number"] == number
    assert record["crs"]["fever_masked_by_treatment"] is False
    assert record["icans"]["consciousness"] == "alert"
    assert record["signature"]["meaning"] == "performed"
    # A grade is never typed.
    typed = api.post(f"/api/v1/patients/{coi}/follow-up", json={**body, "crs_grade": 0})
    assert_problem(typed, 422)
    assert "crs_grade" in typed.get_json()["errors"]
    # Recording the visit again is refused: correct it instead.
    again = api.post(f"/api/v1/patients/{coi}/follow-up", json=body)
    assert_problem(again, 409, "follow_up_recorded")
    no_reason = api.post(f"/api/v1/patients/{coi}/follow-up",
                         json={**body, "corrects": record["id"]})
    assert_problem(no_reason, 422)
    fixed = api.post(f"/api/v1/patients/{coi}/follow-up", json={
        **body, "crs": {"fever": True, "hypoxia": "high_flow"}, "corrects": record["id"],
        "reason": "oxygen was by facemask, not nasal cannula"})
    assert fixed.status_code == 201, fixed.get_json()
    assert fixed.get_json()["version"] == 2 and fixed.get_json()["crs_grade"] == 3
    assert fixed.get_json()["supersedes_id"] == record["id"]
    stale = api.post(f"/api/v1/patients/{coi}/follow-up", json={
        **body, "corrects": record["id"], "reason": "again"})
    assert_problem(stale, 409, "superseded")
    (visit, *_) = api.get(f"/api/v1/patients/{coi}/follow-up").get_json()["visits"]
    assert visit["state"] == "done" and visit["record"]["version"] == 2
    with ward.tx() as s:
        versions = services.versions_of(s, services.record_of(s, record["id"]).visit_id)
        assert [(v.version, v.crs_grade) for v in versions] == [(1, 2), (2, 3)]
    # The original cannot be changed underneath (append-only guard in the database).
    with pytest.raises(Exception, match=r"(?i)append-only|not allowed|refuse"), \
            db.engine.begin() as c:
        c.execute(text("UPDATE follow_up_record SET crs_grade = 0 WHERE id = :i"),
                  {"i": record["id"]})


@pytest.mark.requirement("SPEC §16")
def test_a_death_ends_the_later_visits(ward: Ward, login) -> None:
    from gmp_mes.clock import clock, utcnow
    from outcomes import sweep

    api = login(ward.clinician)
    coi, _, bag = ward.infused(api)
    at = ward.administered_at(bag)
    clock.freeze(max(utcnow(), at + timedelta(days=40)))
    api = login(ward.clinician)
    died = (at + timedelta(days=30)).date()
    answer = api.post(f"/api/v1/patients/{coi}/follow-up", json=record_body(
        assessed_at=_iso(at + timedelta(days=31)), response="PD", alive=False,
        death_date=died.isoformat()))
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["death_date"] == died.isoformat()
    states = [v["state"] for v in api.get(f"/api/v1/patients/{coi}/follow-up").get_json()["visits"]]
    assert states == ["done", "ended", "ended", "ended", "ended"]
    with ward.tx() as s:
        assert sweep.sweep(s, at + timedelta(days=4000)) == []  # nothing is overdue
    # A later visit cannot record the patient alive after the recorded death.
    alive_again = api.post(f"/api/v1/patients/{coi}/follow-up", json=record_body(
        "P100D", assessed_at=_iso(at + timedelta(days=35))))
    assert_problem(alive_again, 422)
    assert "alive" in alive_again.get_json()["errors"]


@pytest.mark.parametrize(("change", "field"), [
    ({"response": "MR"}, "response"),
    ({"visit": "P29D"}, "visit"),
    ({"visit": "day 28"}, "visit"),
    ({"crs": {"fever": True, "hypoxia": "oxygen"}}, "crs.hypoxia"),
    ({"crs": {"hypoxia": "none"}}, "crs.fever"),
    ({"icans": {"ice_score": 11}}, "icans.ice_score"),
    ({"icans": {"ice_score": "7"}}, "icans.ice_score"),
    ({"alive": False}, "death_date"),
    ({"death_date": "2026-01-01"}, "death_date"),
    ({"assessed_at": "2026-12-01T10:00:00"}, "assessed_at"),  # no offset
    ({"assessed_at": "2999-01-01T10:00:00+00:00"}, "assessed_at"),  # in the future
    ({"assessed_at": "2001-01-01T10:00:00+00:00"}, "assessed_at"),  # before the infusion
])
def test_bad_input_is_422_naming_the_field(ward: Ward, login, change: dict, field: str) -> None:
    api = login(ward.clinician)
    coi, _, bag = ward.infused(api)
    body = {**record_body(assessed_at=_iso(ward.administered_at(bag))), **change}
    answer = api.post(f"/api/v1/patients/{coi}/follow-up", json=body)
    assert_problem(answer, 422)
    assert field in answer.get_json()["errors"], answer.get_json()


@pytest.mark.requirement("SPEC §16")
def test_roles(ward: Ward, login, make_user) -> None:
    api = login(ward.clinician)
    coi, _, bag = ward.infused(api)
    qa, operator = login(ward.lab.qa), login(ward.lab.plant.operator)
    assert qa.get(f"/api/v1/patients/{coi}/follow-up").status_code == 200
    assert_problem(operator.get(f"/api/v1/patients/{coi}/follow-up"), 403, "forbidden_role")
    body = record_body(assessed_at=_iso(ward.administered_at(bag)))
    assert_problem(qa.post(f"/api/v1/patients/{coi}/follow-up", json=body), 403,
                   "forbidden_role")
    wrong = api.post(f"/api/v1/patients/{coi}/follow-up",
                     json={**body, "signature": sig("performed", "wrong password")})
    assert_problem(wrong, 401, "signature_rejected")
    assert_problem(api.get("/api/v1/patients/NOPE/follow-up"), 404)


def test_check_grades_dry_run(ward: Ward, login) -> None:
    api = login(ward.clinician)
    answer = api.post("/api/v1/follow-up/grades", json={
        "crs": {"fever": True, "hypotension": "one_vasopressor"},
        "icans": {"ice_score": 10, "seizure": "prolonged"}})
    assert answer.status_code == 200 and answer.get_json() == {"crs_grade": 3,
                                                               "icans_grade": 4}
    assert api.post("/api/v1/follow-up/grades", json={}).get_json() == {
        "crs_grade": None, "icans_grade": None}
    assert_problem(api.post("/api/v1/follow-up/grades", json={"crs": {"fever": "hot"}}), 422)


# --- pages -------------------------------------------------------------------------------

@pytest.mark.requirement("SPEC §16")
def test_patient_page_shows_the_visits_and_the_visit_form_checks_before_signing(
    ward: Ward, login, client
) -> None:
    from tests.test_pages_core import csrf_from, page_login

    api = login(ward.clinician)
    coi, number, bag = ward.infused(api)
    page_login(client, ward.clinician)
    patient = client.get(f"/patients/{coi}").get_data(as_text=True)
    assert "Follow-up" in patient and "Day 28" in patient and 'data-visit="P28D"' in patient
    url = f"/patients/{coi}/follow-up/{number}/P28D"
    html = client.get(url).get_data(as_text=True)
    at = (ward.administered_at(bag) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    form = {"csrf_token": csrf_from(html), "assessed_at": at, "response": "CR", "alive": "yes",
            "crs_assessed": "1", "crs_fever": "1", "crs_hypotension": "no_vasopressor",
            "crs_hypoxia": "none"}
    checked = client.post(url, data={**form, "action": "check"})
    text = checked.get_data(as_text=True)
    assert checked.status_code == 200 and 'id="crs-grade">2<' in text
    assert 'value="no_vasopressor" selected' in text  # what was typed is kept
    with ward.tx() as s:
        from outcomes import services

        assert services.current_records(s, coi) == []  # the check records nothing
    refused = client.post(url, data={**form, "action": "sign", "password": "wrong"})
    assert refused.status_code in (401, 409, 422)
    assert 'value="no_vasopressor" selected' in refused.get_data(as_text=True)
    signed = client.post(url, data={**form, "action": "sign",
                                    "password": ward.clinician.password})
    assert signed.status_code == 302, signed.get_data(as_text=True)
    shown = client.get(signed.headers["Location"]).get_data(as_text=True)
    assert 'id="versions"' in shown and "Correct the record" in shown
    assert "<td>CR</td><td>2</td>" in shown  # the computed grade, as signed


# --- concurrency ---------------------------------------------------------------------------

@pytest.mark.requirement("SPEC §16")
def test_concurrent_records_of_one_visit_give_exactly_one(ward: Ward, login, db) -> None:
    """Eight clinicians' devices record the same visit at once: the visit row lock
    serialises them, one record is written, the others are told it is recorded."""
    import threading

    from gmp_mes.audit import Actor
    from gmp_mes.errors import DomainError
    from gmp_mes.signatures import SignatureInput
    from outcomes import services
    from tests.conftest import PASSWORD
    from tests.helpers import count

    coi, _, bag = ward.infused(login(ward.clinician))
    at = ward.administered_at(bag) + timedelta(minutes=1)
    person = ward.clinician
    attempts = 8
    barrier = threading.Barrier(attempts)
    results: list[object] = [None] * attempts

    def attempt(n: int) -> None:
        barrier.wait()
        try:
            with ward.lab.plant.app.app_context(), db.transaction(
                actor=Actor(person.username, person.user_id, person.username)
            ) as s:
                services.record_follow_up(
                    s, coi, visit="P28D", assessed_at=at, response="CR", alive=True,
                    user_id=person.user_id,
                    signature=SignatureInput(password=PASSWORD, meaning="performed"))
            results[n] = "recorded"
        except DomainError as error:
            results[n] = error.code
        except Exception as error:  # the test reports any other failure
            results[n] = repr(error)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results.count("recorded") == 1, results
    assert set(results) <= {"recorded", "follow_up_recorded", "superseded"}, results
    assert count(db, "follow_up_record") == 1
