"""The trail checks the records, signed checkpoints anchor the chain, the database
guards identity fields and statuses, audit time never goes backwards, and expiry
waits after a forward clock jump (21 CFR 11.10(a), 11.10(e), EU GMP Annex 11 §9, §12.4)."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from gmp_mes import audit, checkpoints, clockwatch
from gmp_mes.audit import Actor
from gmp_mes.clock import clock, utcnow
from gmp_mes.db import throwaway_engine
from gmp_mes.scheduler import run_jobs
from identity import services as identity
from identity import sweep as sweeper
from tests.helpers import assert_problem, audit_events

SYSTEM = Actor.system("test")
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def coi(db, make_site) -> str:
    clock.freeze(T0)
    make_site("CLEAN1")
    make_site("WARD9", "treatment")
    with db.transaction(actor=SYSTEM) as s:
        return identity.enrol_patient(
            s, given_name="Ann", family_name="Lee", date_of_birth=date(1970, 1, 2),
            mrn="MRN1", treatment_site="WARD9", facility_id="A9999",
        ).coi_id


def make_item(db, coi: str, *, hours: float | None = None, status: str = "quarantine") -> str:
    with db.transaction(actor=SYSTEM) as s:
        return identity.create_item(
            s, kind="final_product", coi_id=coi, site_code="CLEAN1", status=status,
            expires_at=None if hours is None else utcnow() + timedelta(hours=hours),
        ).item_id


def verify(runner, *args: str):
    return runner.invoke(args=["audit", "verify", *args])


def insider(db):
    """A connection that carries the application's mark, as someone imitating it would:
    the database guards let it through, so only the reconciliation can find its changes."""
    return db.engine.begin()


def outside_connection(db):
    """A plain client (psql, the sqlite3 shell): no application mark."""
    if db.dialect == "postgresql":
        return throwaway_engine(db.url).connect()
    path = make_url(db.url).database
    return sqlite3.connect(path, isolation_level=None)


def drop_trail_guards(db) -> None:
    with db.engine.begin() as c:
        for table in ("audit_event", "audit_checkpoint"):
            if db.dialect == "postgresql":
                c.execute(text(f"DROP TRIGGER {table}_refuse_change ON {table}"))
            else:
                c.execute(text(f"DROP TRIGGER {table}_refuse_update"))
                c.execute(text(f"DROP TRIGGER {table}_refuse_delete"))


def rechain(db, from_seq: int, old: str, new: str) -> None:
    """Rewrite events from ``from_seq`` on and recompute every hash after them: the chain
    alone is intact again (what a superuser without the installation key can do)."""
    with db.engine.begin() as c:
        rows = c.execute(text("SELECT seq, prev_hash, record FROM audit_event "
                              "WHERE seq >= :s ORDER BY seq"), {"s": from_seq}).all()
        prev = rows[0][1]
        # Unique constraints on the hashes: park the rows first, then write the new chain.
        c.execute(text("UPDATE audit_event SET prev_hash = 'x' || seq, hash = 'y' || seq "
                       "WHERE seq >= :s"), {"s": from_seq})
        for seq, _prev, record in rows:
            record = record.replace(old, new)
            hash_ = audit.chain_hash(prev, record)
            c.execute(text("UPDATE audit_event SET record = :r, prev_hash = :p, hash = :h "
                           "WHERE seq = :s"), {"r": record, "p": prev, "h": hash_, "s": seq})
            prev = hash_


# --- the trail checks the records ----------------------------------------------------------

@pytest.mark.requirement("21 CFR 11.10(e)")
@pytest.mark.requirement("EU GMP Annex 11 §9")
def test_verify_reconciles_clean_records(db, coi, runner) -> None:
    make_item(db, coi, hours=10)
    result = verify(runner)
    assert result.exit_code == 0, result.output
    assert "every audited record matches its last audited values" in result.output


@pytest.mark.requirement("21 CFR 11.10(e)")
@pytest.mark.requirement("EU GMP Annex 11 §9")
def test_raw_update_of_a_patient_name_fails_verify_naming_the_record(db, coi, runner) -> None:
    with insider(db) as c:
        c.execute(text("UPDATE patient SET given_name = 'Eve' WHERE coi_id = :c"), {"c": coi})
    result = verify(runner)
    assert result.exit_code == 1
    assert f'patient {coi}: given_name is "Eve" but the audit trail last recorded "Ann"' in (
        result.output)
    assert "audit trail intact" not in result.output


@pytest.mark.requirement("21 CFR 11.10(e)")
@pytest.mark.requirement("EU GMP Annex 11 §9")
def test_raw_update_of_an_item_status_fails_verify_naming_the_record(db, coi, runner) -> None:
    item_id = make_item(db, coi)
    with db.transaction(actor=SYSTEM) as s:  # an audited change first: the last value counts
        identity.transition_item(s, item_id, "released")
    with insider(db) as c:
        c.execute(text("UPDATE item SET status = 'quarantine', location = 'Bench 2' "
                       "WHERE item_id = :i"), {"i": item_id})
    result = verify(runner)
    assert result.exit_code == 1
    assert f'item {item_id}: status is "quarantine" but the audit trail last recorded ' \
           '"released"' in result.output
    assert f'item {item_id}: location is "Bench 2"' in result.output


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_records_inserted_or_deleted_behind_the_trail_are_named(db, coi, runner) -> None:
    with insider(db) as c:
        c.execute(text("INSERT INTO site (code, name, kind, timezone, created_at) VALUES "
                       "('GHOST', 'Ghost', 'treatment', 'UTC', :at)"), {"at": utcnow()})
    result = verify(runner)
    assert result.exit_code == 1
    assert "site GHOST: exists but has no audit event" in result.output


# --- the database guards identity fields and statuses -----------------------------------------

@pytest.mark.requirement("21 CFR 11.10(a)")
@pytest.mark.requirement("EU GMP Annex 11 §12.4")
@pytest.mark.parametrize("statement", [
    "UPDATE patient SET family_name = 'Other'",
    "UPDATE patient SET date_of_birth = '1999-09-09'",
    "UPDATE patient SET mrn = 'MRN9'",
    "UPDATE item SET status = 'released'",
    "UPDATE item SET kind = 'intermediate'",
])
def test_changes_outside_the_application_are_refused(db, coi, statement) -> None:
    make_item(db, coi)
    connection = outside_connection(db)
    try:
        if db.dialect == "postgresql":
            with pytest.raises(DBAPIError, match="outside gmp-mes refused"):
                connection.execute(text(statement))
            connection.rollback()
            # Columns that are not guarded stay writable from outside (found by verify).
            connection.execute(text("UPDATE item SET location = 'Shelf 1'"))
            connection.commit()
        else:
            with pytest.raises(sqlite3.OperationalError):
                connection.execute(statement)
            connection.execute("UPDATE item SET location = 'Shelf 1'")
    finally:
        connection.close()
    with db.engine.connect() as c:
        assert c.execute(text("SELECT given_name, family_name, mrn FROM patient")).one() == (
            "Ann", "Lee", "MRN1")
        assert c.execute(text("SELECT status, location FROM item WHERE kind = 'final_product'")
                         ).one() == ("quarantine", "Shelf 1")


@pytest.mark.requirement("21 CFR 11.10(a)")
def test_an_item_inserted_outside_the_application_is_refused(db, coi) -> None:
    statement = ("INSERT INTO item (item_id, kind, status, coi_id, site_code, created_at) "
                 f"VALUES ('ITM-FAKE', 'final_product', 'released', '{coi}', 'CLEAN1', "
                 "'2026-06-01 08:00:00')")
    connection = outside_connection(db)
    try:
        if db.dialect == "postgresql":
            with pytest.raises(DBAPIError, match="outside gmp-mes refused"):
                connection.execute(text(statement))
        else:
            with pytest.raises(sqlite3.OperationalError):
                connection.execute(statement)
    finally:
        connection.close()


# --- signed checkpoints -----------------------------------------------------------------------

@pytest.mark.requirement("21 CFR 11.10(e)")
def test_a_checkpoint_is_signed_and_verified(db, coi, runner) -> None:
    out = runner.invoke(args=["audit", "checkpoint"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("checkpoint 1: event ")
    again = runner.invoke(args=["audit", "checkpoint"])
    assert "no new events" in again.output
    make_item(db, coi)
    assert runner.invoke(args=["audit", "checkpoint"]).output.startswith("checkpoint 2: ")
    result = verify(runner)
    assert result.exit_code == 0, result.output
    assert "2 signed checkpoint(s) valid" in result.output


@pytest.mark.requirement("21 CFR 11.10(e)")
@pytest.mark.requirement("EU GMP Annex 11 §9")
def test_a_rechained_trail_fails_against_a_signed_checkpoint(db, coi, runner) -> None:
    make_item(db, coi)
    assert runner.invoke(args=["audit", "checkpoint"]).exit_code == 0
    make_item(db, coi)
    drop_trail_guards(db)
    rechain(db, 2, '"Ann"', '"Eve"')  # the patient's create event, and all after it
    with db.engine.begin() as c:  # the record too, so the reconciliation agrees
        c.execute(text("UPDATE patient SET given_name = 'Eve'"))
    with db.engine.connect() as c:
        assert audit.verify_chain(c).ok  # the chain alone: intact
    result = verify(runner)
    assert result.exit_code == 1
    assert "no longer has the hash signed in checkpoint 1" in result.output
    # Forging the checkpoint to the new chain needs the key: its signature no longer matches.
    with db.engine.begin() as c:
        seq = c.execute(text("SELECT seq FROM audit_checkpoint")).scalar()
        new_hash = c.execute(text("SELECT hash FROM audit_event WHERE seq = :s"),
                             {"s": seq}).scalar()
        c.execute(text("UPDATE audit_checkpoint SET hash = :h"), {"h": new_hash})
    forged = verify(runner)
    assert forged.exit_code == 1 and "the signature does not match" in forged.output


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_a_removed_checkpoint_is_named(db, coi, runner) -> None:
    for _ in range(3):
        make_item(db, coi)
        assert runner.invoke(args=["audit", "checkpoint"]).exit_code == 0
    drop_trail_guards(db)
    with db.engine.begin() as c:
        c.execute(text("DELETE FROM audit_checkpoint WHERE number = 2"))
    result = verify(runner)
    assert result.exit_code == 1 and "checkpoint 2 is missing" in result.output


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_checkpoints_signed_before_a_key_rotation_still_verify(app, db, coi, runner) -> None:
    from labels import keys

    assert runner.invoke(args=["audit", "checkpoint"]).exit_code == 0
    keys.rotate_key(app.config["GMP_SETTINGS"].signing_key)
    make_item(db, coi)
    assert runner.invoke(args=["audit", "checkpoint"]).exit_code == 0
    with db.engine.connect() as c:
        first, second = c.execute(text("SELECT key_id FROM audit_checkpoint ORDER BY number"))
    assert first != second
    result = verify(runner)
    assert result.exit_code == 0 and "2 signed checkpoint(s) valid" in result.output


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_the_scheduler_writes_checkpoints_at_the_configured_interval(app, db, coi) -> None:
    assert any(line.startswith("audit checkpoint 1:") for line in run_jobs(app).changes)
    make_item(db, coi)
    clock.advance(timedelta(minutes=10))  # not yet due (60 min)
    assert not [c for c in run_jobs(app).changes if "checkpoint" in c]
    clock.advance(timedelta(minutes=30))
    assert not [c for c in run_jobs(app).changes if "checkpoint" in c]
    clock.advance(timedelta(minutes=21))  # 61 min since the first: due
    assert [c for c in run_jobs(app).changes if c.startswith("audit checkpoint 2:")]
    for _ in range(3):  # (sweeps every 30 min: no clock jump)
        clock.advance(timedelta(minutes=30))  # due, but nothing new to sign
        assert not [c for c in run_jobs(app).changes if "checkpoint" in c]


# --- verify since the last checkpoint --------------------------------------------------------

@pytest.mark.requirement("21 CFR 11.10(e)")
def test_since_checkpoint_verifies_only_the_events_after_it(db, coi, runner) -> None:
    assert "no signed checkpoint" in verify(runner, "--since-checkpoint").output
    assert runner.invoke(args=["audit", "checkpoint"]).exit_code == 0
    with db.engine.connect() as c:
        covered = c.execute(text("SELECT seq FROM audit_checkpoint")).scalar()
    make_item(db, coi)
    make_item(db, coi)
    with db.engine.connect() as c:
        after = c.execute(text("SELECT count(*) FROM audit_event WHERE seq > :s"),
                          {"s": covered}).scalar()
    result = verify(runner, "--since-checkpoint")
    assert result.exit_code == 0, result.output
    assert f"audit trail intact: {after} events verified since checkpoint 1" in result.output
    drop_trail_guards(db)
    with db.engine.begin() as c:  # an event after the checkpoint altered
        c.execute(text("UPDATE audit_event SET record = replace(record, 'CLEAN1', 'CLEAN2') "
                       "WHERE seq = :s"), {"s": covered + 2})
    bad = verify(runner, "--since-checkpoint")
    assert bad.exit_code == 1 and f"event {covered + 2}" in bad.output


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_since_checkpoint_fails_when_the_checkpoint_left_the_chain(db, coi, runner) -> None:
    make_item(db, coi)
    assert runner.invoke(args=["audit", "checkpoint"]).exit_code == 0
    drop_trail_guards(db)
    rechain(db, 2, '"Ann"', '"Eve"')
    result = verify(runner, "--since-checkpoint")
    assert result.exit_code == 1
    assert "no longer has the hash signed in checkpoint 1" in result.output


# --- audit time stamps never go backwards ----------------------------------------------------

def _alerts(db, kind: str) -> list[tuple[str, str]]:
    with db.engine.connect() as c:
        return [tuple(r) for r in c.execute(
            text("SELECT cause, message FROM alert WHERE kind = :k"), {"k": kind})]


@pytest.mark.requirement("21 CFR 11.10(e)")
@pytest.mark.requirement("EU GMP Annex 11 §9")
def test_a_backward_clock_step_is_refused_and_alerted(db, coi, runner) -> None:
    make_item(db, coi)
    clock.freeze(T0 - timedelta(seconds=5))
    with pytest.raises(audit.ClockWentBackwards) as caught, db.transaction(actor=SYSTEM) as s:
        identity.create_item(s, kind="final_product", coi_id=coi, site_code="CLEAN1",
                             status="quarantine")
    assert caught.value.status == 503 and caught.value.code == "clock_went_backwards"
    out = runner.invoke(args=["sites", "create", "LAB2", "--kind", "manufacturing",
                              "--name", "Lab 2"])
    assert out.exit_code != 0 and "earlier than the last audit event" in out.output
    [(_cause, message)] = _alerts(db, "clock_went_backwards")  # one alert per head, kept
    assert "reads 2026-06-01T07:59:55.000000Z" in message
    events = audit_events(db)
    times = [e["occurred_at"] for e in events]
    assert times == sorted(times)  # the alert's own event carries the head's time
    assert events[-1]["entity_type"] == "alert"
    clock.freeze(T0 + timedelta(seconds=1))  # the clock corrected: writes work again
    make_item(db, coi)
    assert verify(runner).exit_code == 0


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_a_clock_skew_within_the_tolerance_keeps_the_heads_time(db, coi) -> None:
    """Two nodes' clocks a few milliseconds apart: the later event is not refused, it
    carries the head's time (never an earlier one)."""
    clock.freeze(T0 + timedelta(seconds=10))
    make_item(db, coi)
    clock.freeze(T0 + timedelta(seconds=10) - audit.CLOCK_SKEW_TOLERANCE / 2)
    make_item(db, coi)
    times = [e["occurred_at"] for e in audit_events(db)]
    assert times == sorted(times) and times[-1] == "2026-06-01T08:00:10.000000Z"


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_a_backward_step_answers_503_problem_over_the_api(db, make_user, login) -> None:
    clock.freeze(T0)
    qa = make_user("quinn", "qa")
    api = login(qa)
    [alert] = _raise_one(db)
    clock.freeze(T0 - timedelta(minutes=5))
    response = api.post(f"/api/v1/alerts/{alert}/acknowledge", json={})
    assert_problem(response, 503, "clock_went_backwards")
    assert [c for c, _ in _alerts(db, "clock_went_backwards")]


def _raise_one(db) -> list[int]:
    from gmp_mes import alerts

    with db.transaction(actor=SYSTEM) as s:
        return alerts.raise_alerts(s, [alerts.AlertSpec(
            cause="test:1", kind="test", severity="info", subject_type="item",
            subject_id="ITM-1", message="x", roles=("qa",))])


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_verify_reports_an_existing_backward_step(db, coi, runner) -> None:
    """A trail written before this rule (or by a forger) with a time going back."""
    with db.engine.begin() as c:
        last = audit.head(c)
        records = []
        for i, at in enumerate(("2026-06-01T09:00:00.000000Z", "2026-06-01T08:30:00.000000Z")):
            seq = last.seq + 1 + i
            records.append((seq, audit.canonical_json({
                "seq": seq, "at": at, "user_id": None, "username": "system:legacy",
                "action": "note", "entity_type": "thing", "entity_id": str(i), "reason": None,
                "old": None, "new": None})))
        prev = last.hash
        for seq, record in records:
            hash_ = audit.chain_hash(prev, record)
            c.execute(text("INSERT INTO audit_event (seq, record, prev_hash, hash) VALUES "
                           "(:s, :r, :p, :h)"), {"s": seq, "r": record, "p": prev, "h": hash_})
            prev = hash_
    result = verify(runner)
    assert result.exit_code == 1
    assert (f"event {last.seq + 2} is time-stamped 2026-06-01T08:30:00.000000Z, earlier than "
            "the event before it (2026-06-01T09:00:00.000000Z)") in result.output


# --- a forward clock jump holds expiry --------------------------------------------------------

def _status(db, item_id: str) -> str:
    with db.engine.connect() as c:
        return c.execute(text("SELECT status FROM item WHERE item_id = :i"),
                         {"i": item_id}).scalar()


@pytest.mark.requirement("EU GMP Annex 11 §12.4")
@pytest.mark.requirement("21 CFR 11.10(a)")
def test_expiry_waits_after_a_forward_clock_jump_until_confirmed(app, db, coi, runner) -> None:
    item_id = make_item(db, coi, hours=1)
    assert sweeper.job(app) == []  # the first sweep records its time
    clock.advance(timedelta(hours=2))  # more than clock_jump_minutes (60) at once
    lines = sweeper.job(app)
    assert lines and "held since" in lines[0] and "gmp-mes clock confirm" in lines[0]
    assert _status(db, item_id) == "quarantine"  # not expired: the time may be wrong
    [(_cause, message)] = _alerts(db, "clock_jumped")
    assert "held until an admin confirms" in message
    clock.advance(timedelta(minutes=1))  # a normal step does not lift the hold
    assert "held since" in sweeper.job(app)[0]
    assert _status(db, item_id) == "quarantine"
    status = runner.invoke(args=["clock", "status"])
    assert "expiry_sweep: irreversible actions held" in status.output
    refused = runner.invoke(args=["clock", "confirm", "--reason", " "])
    assert refused.exit_code != 0
    out = runner.invoke(args=["clock", "confirm", "--reason", "NTP checked against GPS"])
    assert out.exit_code == 0, out.output
    assert "confirmed" in out.output
    assert "no job is held" in runner.invoke(args=["clock", "status"]).output
    lines = sweeper.job(app)
    assert any(f"expired {item_id}" in line for line in lines)
    assert _status(db, item_id) == "expired"
    actions = [e["action"] for e in audit_events(db, entity_type="clock_watch")]
    assert actions == ["clock_jump_held", "clock_jump_confirmed"]
    confirmed = audit_events(db, entity_type="clock_watch")[-1]
    assert confirmed["reason"] == "NTP checked against GPS"
    again = runner.invoke(args=["clock", "confirm", "--reason", "again"])
    assert again.exit_code != 0 and "not held" in again.output


@pytest.mark.requirement("EU GMP Annex 11 §12.4")
def test_sweeps_at_normal_intervals_expire_on_time(app, db, coi) -> None:
    item_id = make_item(db, coi, hours=1)
    sweeper.job(app)
    for _ in range(3):
        clock.advance(timedelta(minutes=30))
        sweeper.job(app)
    assert _status(db, item_id) == "expired"
    assert _alerts(db, "clock_jumped") == []
    with db.transaction(actor=SYSTEM) as s:
        assert clockwatch.holds(s) == []
        row = s.scalar(select(clockwatch.ClockWatch))
        assert row.last_run_at == utcnow()


@pytest.mark.requirement("EU GMP Annex 11 §12.4")
def test_the_jump_step_is_a_setting(app_config, tmp_path) -> None:
    from gmp_mes.settings import SettingsError, load_settings

    assert load_settings({**app_config, "clock_jump_minutes": "15"}).clock_jump_minutes == 15
    with pytest.raises(SettingsError, match="CLOCK_JUMP_MINUTES"):
        load_settings({**app_config, "clock_jump_minutes": "0"})


def test_checkpoint_job_without_a_registered_key_does_nothing(app) -> None:
    app.extensions.pop(checkpoints.EXTENSION)
    assert checkpoints.job(app) == []


# --- an invariant: reconciliation names exactly the columns changed behind the trail ---------

_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ABCÉ'-", min_size=1, max_size=30).map(
    str.strip).filter(bool)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(audited=st.lists(_NAMES, min_size=1, max_size=3), raw=st.one_of(st.none(), _NAMES),
       zone=st.sampled_from([None, "UTC", "Asia/Tokyo"]))
@pytest.mark.requirement("21 CFR 11.10(e)")
def test_reconcile_names_exactly_what_changed_outside(db, audited, raw, zone) -> None:
    from gmp_mes import accounts, reconcile
    from gmp_mes.models import Site

    code = f"S{uuid.uuid4().hex[:8].upper()}"
    with db.transaction(actor=SYSTEM) as s:
        accounts.create_site(s, code, kind="treatment", name=audited[0], timezone="UTC")
    for name in audited[1:]:  # audited changes through the unit of work
        with db.transaction(actor=SYSTEM) as s:
            s.scalar(select(Site).where(Site.code == code)).name = name
    changed = {}
    with insider(db) as c:
        if raw is not None and raw != audited[-1]:
            c.execute(text("UPDATE site SET name = :n WHERE code = :c"), {"n": raw, "c": code})
            changed["name"] = (audited[-1], raw)
        if zone is not None and zone != "UTC":
            c.execute(text("UPDATE site SET timezone = :z WHERE code = :c"),
                      {"z": zone, "c": code})
            changed["timezone"] = ("UTC", zone)
    with db.session(write=False) as s:
        found = [d for d in reconcile.differences(s) if d.entity_id == code]
    assert {d.column: (d.audited, d.current) for d in found} == changed


@pytest.mark.requirement("EU GMP Annex 11 §12.4")
def test_admin_confirms_the_clock_on_its_page(app, db, coi, client, make_user) -> None:
    from tests.test_pages_core import csrf_from, page_login

    item_id = make_item(db, coi, hours=1)
    sweeper.job(app)
    clock.advance(timedelta(hours=3))
    sweeper.job(app)
    other = app.test_client()
    page_login(other, make_user("otto", "operator"))
    assert other.get("/admin/clock").status_code == 403
    page_login(client, make_user("ada", "admin"))
    page = client.get("/admin/clock")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'data-held="expiry_sweep"' in html
    no_csrf = client.post("/admin/clock/expiry_sweep/confirm", data={"reason": "checked"})
    assert no_csrf.status_code in (400, 403)
    token = csrf_from(html)
    empty = client.post("/admin/clock/expiry_sweep/confirm",
                        data={"csrf_token": token, "reason": ""}, follow_redirects=True)
    assert "Not confirmed" in empty.get_data(as_text=True)
    done = client.post("/admin/clock/expiry_sweep/confirm",
                       data={"csrf_token": token, "reason": "checked against GPS clock"},
                       follow_redirects=True)
    body = done.get_data(as_text=True)
    assert "Clock confirmed" in body and "No job is held" in body
    confirmed = audit_events(db, entity_type="clock_watch")[-1]
    assert confirmed["username"] == "ada" and confirmed["reason"] == "checked against GPS clock"
    assert any(f"expired {item_id}" in line for line in sweeper.job(app))


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_no_checkpoint_is_signed_over_a_broken_chain(app, db, coi, runner) -> None:
    assert runner.invoke(args=["audit", "checkpoint"]).exit_code == 0
    make_item(db, coi)
    drop_trail_guards(db)
    with db.engine.begin() as c:  # an event after the checkpoint altered, not re-chained
        c.execute(text("UPDATE audit_event SET record = replace(record, 'CLEAN1', 'CLEAN2') "
                       "WHERE seq = (SELECT max(seq) FROM audit_event)"))
    out = runner.invoke(args=["audit", "checkpoint"])
    assert out.exit_code != 0 and "no checkpoint signed" in out.output
    clock.advance(timedelta(minutes=61))  # a checkpoint is due: the scheduler refuses too
    assert run_jobs(app).failed == ["gmp_mes.checkpoints.job"]
    with db.engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM audit_checkpoint")).scalar() == 1
    [(_cause, message)] = _alerts(db, "audit_trail_broken")
    assert "hash does not match its content" in message


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_concurrent_checkpoint_writers_never_collide(app, db, coi) -> None:
    """The scheduler and an admin's `audit checkpoint` at the same moment: one signs the
    head, the other finds nothing new; numbers stay contiguous, nothing fails."""
    import threading

    key = checkpoints.installation_key(app)
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def write() -> None:
        barrier.wait()
        try:
            with db.transaction(actor=SYSTEM) as s:
                outcomes.append(checkpoints.write_checkpoint(s, key))
        except Exception as exc:  # collected: the assertion below shows it
            outcomes.append(exc)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    written = [o for o in outcomes if isinstance(o, checkpoints.Checkpoint)]
    assert len(written) == 1 and outcomes.count(None) == 1, outcomes
    with db.engine.connect() as c:
        assert checkpoints.check_all(c, key.public_keys()).problems == []


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_a_refused_follow_up_answers_503_not_500(db, make_user, client) -> None:
    """A wrong password's failure count is a follow-up write: with the clock behind the
    trail it is refused too, and the answer says why (never a 500)."""
    clock.freeze(T0)
    make_user("quinn", "qa")
    clock.freeze(T0 - timedelta(minutes=5))
    response = client.post("/api/v1/auth/tokens", json={"username": "quinn",
                                                         "password": "wrong-password"})
    assert_problem(response, 503, "clock_went_backwards")
    assert _alerts(db, "clock_went_backwards")


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_since_checkpoint_reconciles_the_records_changed_since(db, coi, runner) -> None:
    old_item = make_item(db, coi)
    assert runner.invoke(args=["audit", "checkpoint"]).exit_code == 0
    new_item = make_item(db, coi)
    with db.transaction(actor=SYSTEM) as s:
        identity.transition_item(s, new_item, "released")
    clean = verify(runner, "--since-checkpoint")
    assert clean.exit_code == 0, clean.output
    assert "every record changed since matches" in clean.output
    with insider(db) as c:
        c.execute(text("UPDATE item SET status = CASE item_id WHEN :a THEN 'released' "
                       "ELSE 'quarantine' END WHERE item_id IN (:a, :b)"),
                  {"a": old_item, "b": new_item})
    result = verify(runner, "--since-checkpoint")
    assert result.exit_code == 1
    assert f'item {new_item}: status is "quarantine"' in result.output
    assert old_item not in result.output  # untouched since the checkpoint: the full run's job
    full = verify(runner)
    assert full.exit_code == 1
    assert f"item {new_item}: status" in full.output and f"item {old_item}: status" in full.output
    with db.session(write=False) as s:  # every kind of key is found from the trail too
        from gmp_mes import reconcile

        assert sorted(map(str, reconcile.differences_since(s, 0))) == sorted(
            map(str, reconcile.differences(s)))
