"""Training records through the API (SPEC §12; EU GMP Part IV 3, 21 CFR 211.25): granted
by QA or admin with an e-signature, never overwritten (a renewal is a new record), revoked
with a reason, listed with their status; nobody grants to themselves; bad input is a 422
with field errors, an unknown user a 404."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from gmp_mes import audit, reconcile
from gmp_mes.clock import clock
from tests.conftest import sig
from tests.helpers import assert_problem, audit_events, count
from tests.test_training_fixtures import CODE, School, school_fixture  # noqa: F401
from training.services import grant_content

pytestmark = pytest.mark.requirement("21 CFR 211.25")


def _body(days: float = 365, code: str = CODE, **kw):
    until = (clock.now() + timedelta(days=days)).isoformat()
    return {"code": code, "valid_until": until, "signature": sig("approved"), **kw}


@pytest.mark.requirement("21 CFR 11.70")
def test_qa_grants_a_signed_record_and_anyone_lists_it(school: School, login) -> None:
    answer = login(school.qa).post("/api/v1/users/olga/qualifications", json=_body())
    assert answer.status_code == 201, answer.get_json()
    record = answer.get_json()
    assert record["username"] == "olga" and record["code"] == CODE
    assert record["status"] == "valid" and record["current"] is True
    assert record["granted_by"] == "quinn" and record["signature"]["meaning"] == "approved"
    assert record["granted_at"].startswith(clock.now().strftime("%Y-%m-%dT%H:%M"))
    listed = login(school.operator2).get("/api/v1/users/olga/qualifications").get_json()
    assert listed["username"] == "olga"
    assert [(r["code"], r["status"]) for r in listed["qualifications"]] == [(CODE, "valid")]
    assert listed["current"][0]["code"] == CODE and listed["current"][0]["status"] == "valid"
    [event] = audit_events(school.db, entity_type="qualification")
    assert event["action"] == "create"
    # The signature binds who, what and until when: another validity no longer matches.
    until = datetime.fromisoformat(record["valid_until"])
    digest = record["signature"]["content_digest"]
    assert audit.digest(grant_content("olga", CODE, until)) == digest
    assert audit.digest(grant_content("olga", CODE, until + timedelta(days=1))) != digest


def test_an_admin_grants_too_and_a_date_means_through_that_day(school: School, login) -> None:
    body = {**_body(), "valid_until": "2999-06-30"}
    record = login(school.admin).post("/api/v1/users/olga/qualifications", json=body).get_json()
    # Valid through 30 June at the person's site (Europe/Paris, CEST: UTC+2).
    assert record["valid_until"] == "2999-06-30T22:00:00+00:00"


@pytest.mark.parametrize("role", ["operator", "qc", "clinician"])
def test_other_roles_cannot_grant_or_revoke(school: School, login, make_user, role) -> None:
    person = make_user(f"{role}9", role)
    api = login(person)
    assert_problem(api.post("/api/v1/users/olga/qualifications", json=_body()), 403,
                   "forbidden_role")
    assert_problem(api.post(f"/api/v1/users/olga/qualifications/{CODE}/revoke",
                            json={"reason": "x"}), 403, "forbidden_role")
    assert count(school.db, "qualification") == 0


@pytest.mark.requirement("EU GMP Part IV 3")
def test_nobody_grants_a_qualification_to_themselves(school: School, login) -> None:
    refused = login(school.qa).post("/api/v1/users/quinn/qualifications", json=_body())
    assert_problem(refused, 403, "segregation_of_duties")
    assert count(school.db, "qualification") == count(school.db, "signature") == 0


@pytest.mark.requirement("EU GMP Part IV 3")
def test_the_database_refuses_a_self_grant_and_any_change_to_a_record(school: School) -> None:
    record_id = school.grant(school.operator)
    with school.db.engine.connect() as c:
        with pytest.raises(IntegrityError):  # the CHECK backs the service's rule
            c.execute(text(
                "INSERT INTO qualification (user_id, code, granted_at, valid_until, "
                "granted_by, signature_id) SELECT user_id, code, granted_at, valid_until, "
                "user_id, signature_id FROM qualification WHERE id = :id"), {"id": record_id})
        c.rollback()
        with pytest.raises(DBAPIError):  # append-only: never overwritten
            c.execute(text("UPDATE qualification SET valid_until = granted_at WHERE id = :id"),
                      {"id": record_id})
        c.rollback()
        with pytest.raises(DBAPIError):
            c.execute(text("DELETE FROM qualification WHERE id = :id"), {"id": record_id})
        c.rollback()


def test_unknown_user_is_a_404(school: School, login) -> None:
    api = login(school.qa)
    assert_problem(api.post("/api/v1/users/nobody/qualifications", json=_body()), 404,
                   "not_found")
    assert_problem(api.get("/api/v1/users/nobody/qualifications"), 404, "not_found")
    assert_problem(api.post(f"/api/v1/users/nobody/qualifications/{CODE}/revoke",
                            json={"reason": "left"}), 404, "not_found")


@pytest.mark.parametrize(("change", "field"), [
    ({"code": "Aseptic"}, "code"),
    ({"code": "9lives"}, "code"),
    ({"code": "a" * 49}, "code"),
    ({"valid_until": "yesterday"}, "valid_until"),
    ({"valid_until": "2027-06-30T17:00:00"}, "valid_until"),  # no offset: ambiguous
    ({"valid_until": "2001-01-01T00:00:00+00:00"}, "valid_until"),  # in the past
    ({"valid_until": "2001-01-01"}, "valid_until"),
    ({"signature": {"password": "x", "meaning": "performed"}}, "signature.meaning"),
    ({"extra": 1}, "extra"),
])
def test_bad_input_is_a_422_naming_the_field(school: School, login, change, field) -> None:
    body = {**_body(), **change}
    refused = login(school.qa).post("/api/v1/users/olga/qualifications", json=body)
    problem = assert_problem(refused, 422)
    assert field in problem["errors"], problem
    assert count(school.db, "qualification") == 0


def test_a_wrong_password_signs_nothing(school: School, login) -> None:
    body = {**_body(), "signature": sig("approved", password="wrong")}
    assert_problem(login(school.qa).post("/api/v1/users/olga/qualifications", json=body), 401,
                   "signature_rejected")
    assert count(school.db, "qualification") == 0


def test_a_renewal_is_a_new_record_and_the_old_one_stays(school: School, login) -> None:
    api = login(school.qa)
    first = api.post("/api/v1/users/olga/qualifications", json=_body(days=10)).get_json()
    clock.advance(timedelta(days=1))
    api = login(school.qa)  # a token does not last a day
    second = api.post("/api/v1/users/olga/qualifications", json=_body(days=400)).get_json()
    assert second["id"] != first["id"]
    listed = api.get("/api/v1/users/olga/qualifications").get_json()["qualifications"]
    assert [(r["id"], r["status"], r["current"]) for r in listed] == [
        (second["id"], "valid", True), (first["id"], "valid", False)]
    assert listed[1]["valid_until"] == first["valid_until"]  # never overwritten
    clock.advance(timedelta(days=10))
    listed = login(school.qa).get("/api/v1/users/olga/qualifications").get_json()["qualifications"]
    assert [r["status"] for r in listed] == ["valid", "expired"]


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_revoking_withdraws_every_record_in_force_with_the_reason_audited(
        school: School, login) -> None:
    api = login(school.qa)
    old = api.post("/api/v1/users/olga/qualifications", json=_body(days=10)).get_json()
    renewal = api.post("/api/v1/users/olga/qualifications", json=_body(days=400)).get_json()
    other = api.post("/api/v1/users/olga/qualifications",
                     json=_body(code="cart_manufacturing")).get_json()
    clock.advance(timedelta(minutes=5))
    revoked = api.post(f"/api/v1/users/olga/qualifications/{CODE}/revoke",
                       json={"reason": "media fill failed"})
    assert revoked.status_code == 200, revoked.get_json()
    assert sorted(r["id"] for r in revoked.get_json()) == sorted([old["id"], renewal["id"]])
    assert {(r["status"], r["revoked_by"], r["revoke_reason"]) for r in revoked.get_json()} == {
        ("revoked", "quinn", "media fill failed")}
    listed = api.get("/api/v1/users/olga/qualifications").get_json()
    statuses = {r["id"]: r["status"] for r in listed["qualifications"]}
    assert statuses == {old["id"]: "revoked", renewal["id"]: "revoked", other["id"]: "valid"}
    events = audit_events(school.db, entity_type="qualification_revocation")
    assert len(events) == 2 and {e["reason"] for e in events} == {"media fill failed"}
    with school.tx() as s:  # `audit verify`: the rows are what their trail says
        assert [str(d) for d in reconcile.differences(s)] == []
        assert [str(d) for d in reconcile.differences_since(s, 0)] == []
    # Nothing left in force: a second revocation is refused.
    assert_problem(api.post(f"/api/v1/users/olga/qualifications/{CODE}/revoke",
                            json={"reason": "again"}), 409, "invalid_transition")
    assert_problem(api.post("/api/v1/users/olga/qualifications/never_held/revoke",
                            json={"reason": "x"}), 404, "not_found")
    assert_problem(api.post(f"/api/v1/users/olga/qualifications/{CODE}/revoke",
                            json={"reason": ""}), 422)
    assert_problem(api.post(f"/api/v1/users/olga/qualifications/{CODE}/revoke", json={}), 422)


@settings(deadline=None)
@given(offsets=st.lists(st.integers(min_value=-48, max_value=48), min_size=1, max_size=4),
       probe=st.integers(min_value=-60, max_value=60))
def test_the_standing_is_valid_exactly_when_one_record_holds(offsets, probe) -> None:
    """Invariant of ``standing_of`` over random records (no database): valid at t iff some
    record has granted_at <= t < valid_until and no revocation at or before t."""
    from types import SimpleNamespace

    from training.models import Qualification
    from training.services import standing_of

    base = datetime(2030, 1, 1, tzinfo=UTC)
    records = []
    for i, offset in enumerate(offsets):
        revoked = base + timedelta(hours=offset // 2) if offset % 3 == 0 else None
        record = Qualification(id=i + 1, user_id=1, code=CODE, granted_at=base,
                               valid_until=base + timedelta(hours=abs(offset) + 1))
        record.__dict__["revocation"] = (SimpleNamespace(revoked_at=revoked)
                                         if revoked else None)
        records.append(record)
    at = base + timedelta(hours=probe)
    expected = any(r.granted_at <= at < r.valid_until
                   and (r.revocation is None or r.revocation.revoked_at > at) for r in records)
    assert (standing_of(records, CODE, at).status == "valid") == expected


def test_concurrent_revocations_one_revokes_the_others_find_nothing_in_force(
        school: School, app, login) -> None:
    import threading

    from tests.conftest import ApiClient

    school.grant(school.operator)
    tokens = [login(school.qa).token, login(school.admin).token] * 2
    barrier = threading.Barrier(len(tokens))
    answers: list[tuple[int, str | None]] = [(0, None)] * len(tokens)

    def revoke(n: int) -> None:
        api = ApiClient(app.test_client(), tokens[n])
        barrier.wait()
        response = api.post(f"/api/v1/users/olga/qualifications/{CODE}/revoke",
                            json={"reason": f"attempt {n}"})
        body = response.get_json()
        answers[n] = (response.status_code, body.get("code") if isinstance(body, dict) else None)

    threads = [threading.Thread(target=revoke, args=(n,)) for n in range(len(tokens))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(answers) == [(200, None)] + [(409, "invalid_transition")] * 3, answers
    assert count(school.db, "qualification_revocation") == 1
