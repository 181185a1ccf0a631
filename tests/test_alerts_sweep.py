"""The expiry sweep with short shelf lives and the controllable clock: expiry, each warning
threshold exactly once, hold time, post-thaw limit, catch-up after downtime, repeated and
concurrent sweeps never duplicate (issue 8, SPEC §2, §3, §8)."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from gmp_mes import audit
from gmp_mes.alerts import Alert
from gmp_mes.audit import Actor
from gmp_mes.clock import clock, utcnow
from gmp_mes.models import User
from gmp_mes.scheduler import SchedulerHost
from identity import services as identity
from identity import sweep as sweeper
from identity.models import Item
from tests.helpers import audit_events, trail_time

SYSTEM = Actor.system("test")
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def coi(db, make_site) -> str:
    clock.freeze(T0)  # first: audit time stamps never go backwards
    make_site("CLEAN1")
    make_site("WARD9", "treatment")
    with db.transaction(actor=SYSTEM) as s:
        patient = identity.enrol_patient(
            s, given_name="Ann", family_name="Lee", date_of_birth=date(1970, 1, 2),
            mrn="MRN1", treatment_site="WARD9", facility_id="A9999",
        )
        return patient.coi_id


def make_item(db, coi, *, seconds: float | None, warnings=(), kind="final_product",
              status="quarantine", window=None, site="CLEAN1") -> str:
    with db.transaction(actor=SYSTEM) as s:
        item = identity.create_item(
            s, kind=kind, coi_id=coi, site_code=site, status=status,
            expires_at=None if seconds is None else utcnow() + timedelta(seconds=seconds),
            expiry_warnings=warnings, post_thaw_window=window,
        )
        return item.item_id


def run_sweep(db) -> sweeper.SweepResult:
    with db.transaction(actor=sweeper.ACTOR) as s:
        return sweeper.sweep(s)


def status_of(db, item_id) -> str:
    with db.session(write=False) as s:
        return s.get(Item, item_id).status


def alerts_of(db, item_id=None) -> list[tuple[str, str, str]]:
    with db.session(write=False) as s:
        statement = select(Alert).order_by(Alert.id)
        if item_id:
            statement = statement.where(Alert.subject_id == item_id)
        return [(a.cause, a.kind, a.severity) for a in s.scalars(statement)]


def chain_ok(db) -> bool:
    with db.engine.connect() as c:
        return audit.verify_chain(c).ok


@pytest.mark.requirement("EU GMP Annex 1 / ATMP guidelines: shelf life")
def test_an_item_past_its_expiry_is_expired_once_with_alert_and_audit(db, coi) -> None:
    item_id = make_item(db, coi, seconds=10)
    clock.advance(timedelta(seconds=9))
    assert run_sweep(db).expired == []
    assert status_of(db, item_id) == "quarantine"
    clock.advance(timedelta(seconds=1))  # exactly at expires_at: expired
    result = run_sweep(db)
    assert [e[0] for e in result.expired] == [item_id]
    assert status_of(db, item_id) == "expired"
    assert alerts_of(db, item_id) == [(f"expired:{item_id}", "expired", "critical")]
    (event,) = [e for e in audit_events(db, entity_type="item", entity_id=item_id)
                if e["action"] == "update" and '"expired"' in e["record"]]
    assert event["username"] == "system:sweep" and event["reason"] == "shelf life ended"
    assert '"old":{"status":"quarantine"}' in event["record"]
    # Reruns change nothing: no second alert, no second event.
    before = len(audit_events(db))
    assert run_sweep(db).lines() == []
    assert len(audit_events(db)) == before and len(alerts_of(db)) == 1
    assert chain_ok(db)


def test_each_warning_threshold_fires_exactly_once(db, coi) -> None:
    item_id = make_item(db, coi, seconds=10, warnings=("PT8S", "PT3S"))
    seen = []
    for _ in range(12):  # one sweep a second, twice per tick to prove idempotence
        run_sweep(db)
        run_sweep(db)
        seen.append([cause for cause, _, _ in alerts_of(db, item_id)])
        clock.advance(timedelta(seconds=1))
    assert seen[1] == []  # 9 s left: no threshold reached yet
    assert seen[2] == [f"expiry_warning:{item_id}:PT8S"]  # 8 s left
    assert seen[7] == [f"expiry_warning:{item_id}:PT8S", f"expiry_warning:{item_id}:PT3S"]
    assert seen[10] == seen[7] + [f"expired:{item_id}"]
    assert seen[11] == seen[10]
    with db.session(write=False) as s:
        warning = s.scalar(select(Alert).where(Alert.cause == f"expiry_warning:{item_id}:PT3S"))
        assert warning.due_at == T0 + timedelta(seconds=10)
        assert warning.severity == "warning" and warning.site_code == "CLEAN1"
        assert warning.role_list == ["qa", "operator", "clinician"]
    assert chain_ok(db)


def test_catch_up_after_downtime(db, coi) -> None:
    """Down for a day: the first sweep expires what expired meanwhile (no stale warnings
    for it) and raises every threshold an item crossed meanwhile, once."""
    gone = make_item(db, coi, seconds=3600, warnings=("PT30M",))
    later = make_item(db, coi, seconds=86400 + 1800, warnings=("P1D", "PT2H"))
    clock.advance(timedelta(days=1))
    result = run_sweep(db)
    assert [e[0] for e in result.expired] == [gone]
    assert alerts_of(db, gone) == [(f"expired:{gone}", "expired", "critical")]
    assert sorted(c for c, _, _ in alerts_of(db, later)) == [
        f"expiry_warning:{later}:P1D", f"expiry_warning:{later}:PT2H"
    ]
    assert run_sweep(db).lines() == []


def test_the_scheduler_sweeps_at_once_on_start(app, db, coi) -> None:
    item_id = make_item(db, coi, seconds=5)
    clock.advance(timedelta(minutes=5))  # expired while no scheduler ran
    host = SchedulerHost(app)  # interval 60 s: only the immediate first round can do it
    stop = threading.Event()
    thread = threading.Thread(target=host.run_forever, args=(stop,))
    thread.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        while status_of(db, item_id) != "expired" and datetime.now(UTC) < deadline:
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(10)
        host.stop()
    assert status_of(db, item_id) == "expired"


def test_starting_material_past_its_hold_time(db, coi) -> None:
    item_id = make_item(db, coi, seconds=48, kind="starting_material", status="available",
                        warnings=("PT24S",))
    clock.advance(timedelta(seconds=30))
    run_sweep(db)
    clock.advance(timedelta(seconds=18))
    run_sweep(db)
    assert status_of(db, item_id) == "expired"
    assert alerts_of(db, item_id) == [
        (f"expiry_warning:{item_id}:PT24S", "expiry_warning", "warning"),
        (f"hold_time_exceeded:{item_id}", "hold_time_exceeded", "critical"),
    ]
    events = [e for e in audit_events(db, entity_type="item", entity_id=item_id)
              if '"expired"' in e["record"]]
    assert events[0]["reason"] == "starting material hold time ended"


def test_thawed_item_past_the_post_thaw_window(db, coi, make_user) -> None:
    nurse = make_user("nurse1", "clinician", site="WARD9")
    keeper = make_user("keeper1", "operator", site="CLEAN1")
    item_id = make_item(db, coi, seconds=86400 * 30, window="PT5S", site="WARD9")
    with db.transaction(actor=nurse.actor) as s:
        identity.transition_item(s, item_id, "released")
        user = s.get(User, nurse.user_id)
        identity.record_custody(s, item_id, action="ship", site="CLEAN1", user=user)
    # Received and thawed at the destination, by a user of that site.
    with db.transaction(actor=keeper.actor) as s:
        user = s.get(User, keeper.user_id)
        identity.record_custody(s, item_id, action="receive", site="CLEAN1", user=user)
        identity.record_custody(s, item_id, action="thaw", site="CLEAN1", user=user)
    clock.advance(timedelta(seconds=4))
    assert run_sweep(db).expired == []
    clock.advance(timedelta(seconds=1))
    result = run_sweep(db)
    assert result.expired == [(item_id, "final_product", "thawed", "post_thaw")]
    assert status_of(db, item_id) == "expired"
    assert alerts_of(db, item_id) == [
        (f"post_thaw_exceeded:{item_id}", "post_thaw_exceeded", "critical")
    ]
    assert run_sweep(db).lines() == []


def test_final_items_and_items_without_expiry_are_left_alone(db, coi) -> None:
    destroyed = make_item(db, coi, seconds=5)
    with db.transaction(actor=SYSTEM) as s:
        identity.transition_item(s, destroyed, "destroyed", reason="broken bag")
    open_ended = make_item(db, coi, seconds=None, warnings=("PT1S",))
    clock.advance(timedelta(days=400))
    assert run_sweep(db).lines() == []
    assert status_of(db, destroyed) == "destroyed" and status_of(db, open_ended) == "quarantine"
    assert alerts_of(db) == []


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_concurrent_sweeps_never_duplicate(db, coi) -> None:
    items = [make_item(db, coi, seconds=5 + i, warnings=("PT10S", "PT3S")) for i in range(12)]
    clock.advance(timedelta(seconds=9))  # all warned, some expired
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []
    results: list[sweeper.SweepResult] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(run_sweep(db))
        except BaseException as exc:  # asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    expired_ids = [item_id for r in results for item_id, *_ in r.expired]
    assert sorted(expired_ids) == sorted(items[:5])  # each expired by exactly one sweep
    causes = [cause for cause, _, _ in alerts_of(db)]
    assert len(causes) == len(set(causes))
    assert sum(r.new_alerts for r in results) == len(causes)
    assert len([c for c in causes if c.startswith("expired:")]) == 5
    assert len([c for c in causes if c.endswith(":PT10S")]) == 7  # live items only
    assert len([c for c in causes if c.endswith(":PT3S")]) == 3  # 10, 11 and 12 s
    updates = [e for e in audit_events(db, entity_type="item") if '"expired"' in e["record"]]
    assert len(updates) == 5
    assert chain_ok(db)


def test_sweep_command_prints_what_it_changed(db, coi, runner) -> None:
    item_id = make_item(db, coi, seconds=2, warnings=("PT1S",))
    clock.advance(timedelta(seconds=1))
    out = runner.invoke(args=["sweep"])
    assert out.exit_code == 0, out.output
    assert f"expiry warning {item_id}: expires within PT1S" in out.output
    clock.advance(timedelta(seconds=1))
    out = runner.invoke(args=["sweep"])
    assert f"expired {item_id} (final_product, was quarantine): shelf life" in out.output
    assert "sweep: 1 item(s) expired, 0 warning(s), 1 new alert(s)" in out.output
    assert "sweep: nothing changed" in runner.invoke(args=["sweep"]).output


def test_unreadable_stored_durations_never_expire_anything(db, coi) -> None:
    item_id = make_item(db, coi, seconds=100, warnings=("PT50S",))
    with db.engine.begin() as c:  # a value identity would refuse, written behind its back
        c.execute(text("UPDATE item SET expiry_warnings = 'PT50S,garbage,P0D' "
                       "WHERE item_id = :i"), {"i": item_id})
    clock.advance(timedelta(seconds=60))
    assert [w for w in run_sweep(db).warnings] == [(item_id, "PT50S")]


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    life=st.integers(min_value=2, max_value=40),
    thresholds=st.lists(st.integers(min_value=1, max_value=45), min_size=0, max_size=3,
                        unique=True),
    steps=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=6),
)
def test_sweep_invariants(db, coi, life, thresholds, steps) -> None:
    """Whatever the sweep times: an item is expired iff a sweep ran at or after its expiry;
    a threshold's warning exists iff a sweep ran inside its window before the expiry;
    never two alerts for one cause."""
    # Each example starts where the trail is (the same database): time never goes back.
    clock.freeze(max(T0, trail_time(db)))
    start = utcnow()
    item_id = make_item(db, coi, seconds=life, warnings=tuple(f"PT{t}S" for t in thresholds))
    sweep_times = []
    for step in steps:
        clock.advance(timedelta(seconds=step))
        sweep_times.append((utcnow() - start).total_seconds())
        run_sweep(db)
    expired = any(t >= life for t in sweep_times)
    assert (status_of(db, item_id) == "expired") == expired
    causes = [cause for cause, _, _ in alerts_of(db, item_id)]
    assert len(causes) == len(set(causes))
    for threshold in thresholds:
        warned = any(life - threshold <= t < life for t in sweep_times)
        assert (f"expiry_warning:{item_id}:PT{threshold}S" in causes) == warned, (
            threshold, sweep_times)
    assert (f"expired:{item_id}" in causes) == expired


def test_collected_starting_material_warns_and_expires_by_the_process_hold_time(
    app, db, coi
) -> None:
    """End to end with the shipped process definition: hold time PT48H, warnings at
    PT24H and PT4H before it (SPEC §3)."""
    with app.app_context(), db.transaction(actor=SYSTEM) as s:
        collection = identity.record_collection(
            s, coi_id=coi, collected_at=T0, site="CLEAN1", volume_ml=180.0,
        )
        item_id = collection.item_id
    marks = {}
    for hours in (23, 24, 43, 44, 47, 48):
        clock.freeze(T0 + timedelta(hours=hours))
        run_sweep(db)
        marks[hours] = [cause.replace(f":{item_id}", "") for cause, _, _ in alerts_of(db, item_id)]
    assert marks[23] == []
    assert marks[24] == ["expiry_warning:P1D"]  # PT24H, normalised
    assert marks[43] == marks[24]
    assert marks[44] == ["expiry_warning:P1D", "expiry_warning:PT4H"]
    assert marks[48] == marks[44] + ["hold_time_exceeded"]
    assert status_of(db, item_id) == "expired"
