"""Alerts: exactly one per cause, listing with filters, acknowledgement recorded and
audited, the /alerts page and the dashboard panels (issue 8, SPEC §2, §7, §7b)."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from gmp_mes import alerts, audit
from gmp_mes.alerts import AlertSpec
from gmp_mes.audit import Actor, Entry
from gmp_mes.clock import clock, utcnow
from tests.conftest import PASSWORD
from tests.helpers import assert_problem, audit_events, count

SYSTEM = Actor.system("test")


def spec(cause: str, **kw) -> AlertSpec:
    values = {
        "cause": cause,
        "kind": "expired",
        "severity": "major",
        "subject_type": "item",
        "subject_id": cause.split(":")[-1],
        "message": f"item {cause} expired",
        "roles": ("operator", "qa"),
        "site_code": "CLEAN1",
        "due_at": None,
    }
    values.update(kw)
    return AlertSpec(**values)


def raise_(db, *specs: AlertSpec) -> list[int | None]:
    ids = []
    with db.transaction(actor=SYSTEM) as s:
        for one in specs:
            alert = alerts.raise_alert(s, one)
            ids.append(alert.id if alert else None)
    return ids


def verify(db) -> audit.VerifyResult:
    with db.engine.connect() as c:
        return audit.verify_chain(c)


# --- exactly once ---------------------------------------------------------------------------

def test_one_alert_per_cause_even_when_raised_again(db) -> None:
    first = raise_(db, spec("expired:ITM-A"))
    again = raise_(db, spec("expired:ITM-A"), spec("expired:ITM-A", message="other text"))
    assert first[0] is not None and again == [None, None]
    assert count(db, "alert") == 1
    assert len(audit_events(db, entity_type="alert")) == 1


def test_concurrent_raisers_create_one_alert(db) -> None:
    barrier = threading.Barrier(8)
    results: list[int | None] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            with db.transaction(actor=SYSTEM) as s:
                alert = alerts.raise_alert(s, spec("expired:ITM-RACE"))
                results.append(alert.id if alert else None)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len([r for r in results if r is not None]) == 1
    assert count(db, "alert") == 1
    assert verify(db).ok


def test_bulk_raise_skips_existing_causes_and_extends_the_chain(db) -> None:
    raise_(db, spec("expired:ITM-1"))
    with db.transaction(actor=SYSTEM) as s:
        new = alerts.raise_alerts(
            s,
            [spec("expired:ITM-1"), spec("expired:ITM-2"), spec("expired:ITM-3"),
             spec("expired:ITM-2")],
            events_before=[Entry("update", "item", "ITM-2", {"status": "released"},
                                 {"status": "expired"})],
        )
    assert len(new) == 2
    assert count(db, "alert") == 3
    events = audit_events(db)
    tail = events[-3:]
    assert [(e["action"], e["entity_type"]) for e in tail] == [
        ("update", "item"), ("create", "alert"), ("create", "alert")
    ]
    assert {e["entity_id"] for e in tail[1:]} == {str(i) for i in new}
    assert verify(db).ok


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_bulk_append_writes_the_same_chain_as_single_appends(db) -> None:
    """record_many must produce events verify_chain accepts, interleaved with record()."""
    clock.freeze(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    with db.transaction(actor=SYSTEM) as s:
        audit.record(s, "note", "thing", "1", new={"a": 1})
    with db.transaction(actor=SYSTEM) as s:
        n = audit.record_many(s, [
            Entry("update", "item", f"ITM-{i}", {"status": "released"},
                  {"status": "expired", "at": utcnow()}, reason="shelf life")
            for i in range(50)
        ])
    with db.transaction(actor=SYSTEM) as s:
        audit.record(s, "note", "thing", "2", new={"b": [1, 2]})
    assert n == 50
    events = audit_events(db)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    bulk = [e for e in events if e["entity_type"] == "item"]
    assert len(bulk) == 50 and all(e["reason"] == "shelf life" for e in bulk)
    assert '"new":{"at":"2026-03-01T12:00:00.000000Z","status":"expired"}' in bulk[0]["record"]
    assert verify(db).ok


def test_bulk_append_without_actor_is_refused(db) -> None:
    with pytest.raises(audit.MissingActor), db.transaction() as s:
        audit.record_many(s, [Entry("x", "y", "z")])
    assert count(db, "audit_event") == 0


# --- API ------------------------------------------------------------------------------------

@pytest.fixture
def seeded(db, make_site):
    clock.freeze(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))  # first: audit times never go back
    make_site("CLEAN1")
    make_site("WARD9", "treatment")
    ids = raise_(
        db,
        spec("expired:ITM-1"),
        spec("warn:ITM-2:PT4H", kind="expiry_warning", severity="warning", subject_id="ITM-2",
             due_at=utcnow() + timedelta(hours=4)),
        spec("expired:ITM-3", site_code="WARD9", roles=("clinician",)),
    )
    return ids


def test_users_list_the_alerts_addressed_to_them_with_filters(make_user, login, seeded) -> None:
    # Like the pages: the alerts of the caller's roles and site (QA oversees every site).
    clinician = login(make_user("cli1", "clinician", site="WARD9"))
    assert [a["id"] for a in clinician.get("/api/v1/alerts").get_json()] == [seeded[2]]
    ward = clinician.get("/api/v1/alerts?site=ward9").get_json()
    assert [a["id"] for a in ward] == [seeded[2]]
    assert clinician.get("/api/v1/alerts?site=clean1").get_json() == []
    api = login(make_user("qa9", "qa", site="WARD9"))
    every = api.get("/api/v1/alerts").get_json()
    assert [a["id"] for a in every] == sorted(seeded[:2], reverse=True)
    first = next(a for a in every if a["id"] == seeded[0])
    assert first["status"] == "open" and first["site"] == "CLEAN1"
    assert first["roles"] == ["operator", "qa"] and first["acknowledged_by"] is None
    assert api.get("/api/v1/alerts?site=ward9").get_json() == []
    assert_problem(api.get(f"/api/v1/alerts/{seeded[2]}"), 404, "not_found")
    warnings = api.get("/api/v1/alerts?kind=expiry_warning").get_json()
    assert [a["id"] for a in warnings] == [seeded[1]]
    assert warnings[0]["due_at"].startswith("2026-06-01T12:00:00")
    assert api.get("/api/v1/alerts?status=acknowledged").get_json() == []


def test_alerts_need_authentication(anonymous, seeded) -> None:
    assert_problem(anonymous.get("/api/v1/alerts"), 401, "unauthenticated")
    assert_problem(anonymous.post(f"/api/v1/alerts/{seeded[0]}/acknowledge"), 401)


@pytest.mark.parametrize("query", ["status=closed", "limit=0", "limit=abc", "colour=red",
                                   "offset=-1"])
def test_bad_filters_are_422_not_500(make_user, login, seeded, query) -> None:
    api = login(make_user("op1", "operator"))
    assert_problem(api.get(f"/api/v1/alerts?{query}"), 422, "validation_error")


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_acknowledgement_is_recorded_and_audited(make_user, login, seeded, db) -> None:
    person = make_user("op2", "operator")
    api = login(person)
    clock.advance(timedelta(minutes=5))
    response = api.post(f"/api/v1/alerts/{seeded[0]}/acknowledge",
                        json={"note": "moved to quarantine"})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "acknowledged" and body["acknowledged_by"] == "op2"
    assert body["acknowledged_at"].startswith("2026-06-01T08:05:00")
    assert body["acknowledge_note"] == "moved to quarantine"
    (event,) = [e for e in audit_events(db, entity_type="alert", entity_id=str(seeded[0]))
                if e["action"] == "update"]
    assert event["username"] == "op2" and event["user_id"] == person.user_id
    assert '"status":"acknowledged"' in event["record"] and '"status":"open"' in event["record"]
    again = api.post(f"/api/v1/alerts/{seeded[0]}/acknowledge")
    assert_problem(again, 409, "already_acknowledged")
    # The ward's clinician alert is not the operator's: still open, but not listed here.
    assert [a["id"] for a in api.get("/api/v1/alerts?status=open").get_json()] == [seeded[1]]


def test_acknowledge_without_body_and_errors(make_user, login, seeded) -> None:
    api = login(make_user("qa1", "qa"))
    assert api.post(f"/api/v1/alerts/{seeded[1]}/acknowledge").status_code == 200
    assert_problem(api.post("/api/v1/alerts/999999/acknowledge"), 404, "not_found")
    assert_problem(api.post(f"/api/v1/alerts/{seeded[2]}/acknowledge", json={"x": 1}), 422)
    assert_problem(api.post(f"/api/v1/alerts/{seeded[2]}/acknowledge",
                            json={"note": "n" * 2001}), 422)
    response = api.client.post(
        f"/api/v1/alerts/{seeded[2]}/acknowledge", data="{not json",
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
    )
    assert response.status_code in (400, 422)
    assert response.content_type.startswith("application/problem+json")


def test_concurrent_acknowledgements_one_wins(make_user, app, seeded, db) -> None:
    users = [make_user(f"ack{i}", "operator") for i in range(4)]
    barrier = threading.Barrier(len(users))
    statuses: list[int] = []

    def worker(person) -> None:
        client = app.test_client()
        token = client.post("/api/v1/auth/tokens", json={
            "username": person.username, "password": PASSWORD}).get_json()["token"]
        barrier.wait()
        response = client.post(f"/api/v1/alerts/{seeded[0]}/acknowledge",
                               headers={"Authorization": f"Bearer {token}"})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=worker, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 409, 409, 409]
    updates = [e for e in audit_events(db, entity_type="alert", entity_id=str(seeded[0]))
               if e["action"] == "update"]
    assert len(updates) == 1


def test_alerts_appear_in_openapi(anonymous) -> None:
    paths = anonymous.get("/api/v1/openapi.json").get_json()["paths"]
    assert "get" in paths["/api/v1/alerts"]
    assert "post" in paths["/api/v1/alerts/{alert_id}/acknowledge"]


# --- pages ----------------------------------------------------------------------------------

def page_login(client, person) -> str:
    login_page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', login_page)
    response = client.post("/login", data={
        "username": person.username, "password": person.password,
        "csrf_token": token.group(1) if token else "",
    })
    assert response.status_code == 302, response.get_data(as_text=True)
    page = client.get("/alerts").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def test_alerts_page_lists_filters_and_acknowledges(make_user, client, seeded, db) -> None:
    person = make_user("op3", "operator")
    csrf = page_login(client, person)
    page = client.get("/alerts").get_data(as_text=True)
    assert "item expired:ITM-1 expired" in page and "ITM-2" in page
    assert "ITM-3" not in page  # the ward's clinicians' alert, not the cleanroom operator's
    assert "2026-06-01 14:00 CEST" in page  # due time in the site's time zone (Paris)
    ward = client.get("/alerts?site=WARD9").get_data(as_text=True)
    assert "ITM-3" not in ward and "ITM-1 expired" not in ward
    clean = client.get("/alerts?site=CLEAN1&kind=expired").get_data(as_text=True)
    assert "ITM-1 expired" in clean and "ITM-2" not in clean
    response = client.post(f"/alerts/{seeded[0]}/acknowledge",
                           data={"csrf_token": csrf, "note": "seen", "back_status": "open"})
    assert response.status_code == 302 and "status=open" in response.headers["Location"]
    page = client.get("/alerts?status=acknowledged").get_data(as_text=True)
    assert "acknowledged by op3" in page and "seen" in page
    with db.engine.connect() as c:
        assert c.execute(text("SELECT status FROM alert WHERE id = :i"),
                         {"i": seeded[0]}).scalar() == "acknowledged"


def test_acknowledge_form_without_csrf_is_refused(make_user, client, seeded, db) -> None:
    page_login(client, make_user("op4", "operator"))
    response = client.post(f"/alerts/{seeded[0]}/acknowledge", data={"note": "x"})
    assert response.status_code == 403
    with db.engine.connect() as c:
        assert c.execute(text("SELECT status FROM alert WHERE id = :i"),
                         {"i": seeded[0]}).scalar() == "open"


def test_alerts_page_bad_filter_is_422_and_login_required(make_user, client, seeded) -> None:
    assert client.get("/alerts").status_code == 302  # to the login page
    page_login(client, make_user("op5", "operator"))
    response = client.get("/alerts?status=bogus")
    assert response.status_code == 422
    assert "status" in response.get_data(as_text=True)


def test_dashboard_panels_show_open_alerts_and_countdown(make_user, client, seeded) -> None:
    clock.advance(timedelta(hours=1, minutes=30))
    page_login(client, make_user("op6", "operator"))
    page = client.get("/").get_data(as_text=True)
    assert "Open alerts (2)" in page  # the two CLEAN1 alerts addressed to operators
    assert "Expiring soon (countdown)" in page
    assert "ITM-2" in page and "2 h 30 min" in page
    clinician = make_user("cli2", "clinician", site="WARD9")
    client.post("/logout")
    page_login(client, clinician)
    page = client.get("/").get_data(as_text=True)
    assert "Open alerts (1)" in page and "item expired:ITM-3 expired" in page
    assert "Nothing expires soon." in page


def test_countdown_text() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert alerts.countdown(now + timedelta(days=2, hours=3), now) == "2 d 3 h"
    assert alerts.countdown(now + timedelta(hours=1, minutes=5), now) == "1 h 5 min"
    assert alerts.countdown(now + timedelta(minutes=7, seconds=10), now) == "7 min"
    assert alerts.countdown(now + timedelta(seconds=42), now) == "42 s"
    assert alerts.countdown(now - timedelta(seconds=1), now) == "overdue"
    assert alerts.countdown(None, now) == ""
