"""Audit trail: attributable, system-time-stamped, append-only, hash-chained
(21 CFR 11.10(e), EU GMP Annex 11 §9)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from gmp_mes import accounts, audit
from gmp_mes.audit import Actor, MissingActor
from gmp_mes.clock import clock
from gmp_mes.models import Site, User
from tests.helpers import audit_events, count

ADMIN = Actor("admin", None, "Admin")


def verify(db) -> audit.VerifyResult:
    with db.engine.connect() as connection:
        return audit.verify_chain(connection)


def drop_guards(db) -> None:
    """Tampering as an attacker with database superuser rights would."""
    with db.engine.begin() as c:
        if db.dialect == "postgresql":
            c.execute(text("DROP TRIGGER audit_event_refuse_change ON audit_event"))
        else:
            c.execute(text("DROP TRIGGER audit_event_refuse_update"))
            c.execute(text("DROP TRIGGER audit_event_refuse_delete"))


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_every_insert_and_update_is_audited_with_old_and_new_values(db) -> None:
    clock.freeze(datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC))
    with db.transaction(actor=ADMIN) as s:
        accounts.create_site(s, "LAB1", kind="manufacturing", name="Lab one")
    with db.transaction(actor=ADMIN) as s:
        site = s.scalar(select(Site).where(Site.code == "LAB1"))
        with audit.reason(s, "name was misspelt"):
            site.name = "Lab One"
    created, updated = audit_events(db, entity_type="site")
    assert created["action"] == "create" and created["username"] == "admin"
    assert created["occurred_at"] is not None
    assert '"name":"Lab one"' in created["record"]
    assert updated["action"] == "update"
    assert updated["reason"] == "name was misspelt"
    assert '"old":{"name":"Lab one"}' in updated["record"]
    assert '"new":{"name":"Lab One"}' in updated["record"]
    assert '"at":"2026-05-04T03:02:01.123456Z"' in updated["record"]


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_passwords_never_appear_in_the_trail(db, make_user) -> None:
    make_user("alice", "qa")
    (event,) = audit_events(db, entity_type="user")
    assert "argon2" not in event["record"]
    assert '"password_hash":"[redacted]"' in event["record"]


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_failed_transaction_leaves_neither_record_nor_event(db) -> None:
    before = count(db, "audit_event")
    with pytest.raises(RuntimeError), db.transaction(actor=ADMIN) as s:
        accounts.create_site(s, "GONE", kind="treatment", name="Never committed")
        raise RuntimeError("power cut")
    assert count(db, "audit_event") == before
    assert count(db, "site") == 0


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_change_without_actor_is_refused(db) -> None:
    with pytest.raises(MissingActor), db.transaction() as s:
        accounts.create_site(s, "ANON", kind="treatment", name="No one")
    assert count(db, "site") == 0


@pytest.mark.requirement("EU GMP Annex 11 §9")
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_event SET record = '{}'",
        "DELETE FROM audit_event",
    ],
)
def test_database_refuses_update_and_delete_of_the_trail(db, make_site, statement) -> None:
    make_site("LAB1")
    with pytest.raises(DBAPIError, match="refused"), db.engine.begin() as c:
        c.execute(text(statement))
    assert verify(db).ok


@pytest.mark.requirement("EU GMP Annex 11 §9")
def test_database_refuses_truncate_on_postgresql(db, make_site) -> None:
    if db.dialect != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    make_site("LAB1")
    with pytest.raises(DBAPIError, match="refused"), db.engine.begin() as c:
        c.execute(text("TRUNCATE audit_event"))


@pytest.mark.requirement("21 CFR 11.10(a)")
def test_orm_refuses_to_delete_gmp_records(db, make_site) -> None:
    make_site("LAB1")
    with pytest.raises(PermissionError), db.transaction(actor=ADMIN) as s:
        s.delete(s.scalar(select(Site)))
    assert count(db, "site") == 1


@pytest.fixture
def trail(db, make_user):
    for name in ("ann", "ben", "cat"):
        make_user(name, "operator")
    result = verify(db)
    assert result.ok and result.checked >= 6
    drop_guards(db)
    return db


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_verify_passes_on_a_clean_trail(db, make_user, runner) -> None:
    make_user("ann", "operator")
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "intact" in result.output


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_verify_names_an_altered_event(trail, runner) -> None:
    with trail.engine.begin() as c:
        c.execute(
            text(
                "UPDATE audit_event SET record = replace(record, 'operator', 'admin') WHERE seq = 3"
            )
        )
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert "event 3" in result.output


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_searchable_columns_cannot_be_edited_apart_from_the_record(trail) -> None:
    """They are generated from the hashed record by the database itself."""
    with pytest.raises(DBAPIError), trail.engine.begin() as c:
        c.execute(text("UPDATE audit_event SET username = 'someone-else' WHERE seq = 2"))
    assert verify(trail).ok


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_verify_names_a_deleted_event(trail, runner) -> None:
    with trail.engine.begin() as c:
        c.execute(text("DELETE FROM audit_event WHERE seq = 4"))
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1
    assert "event 4" in result.output


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_an_anchor_reveals_removed_last_events_the_chain_alone_cannot(trail, runner) -> None:
    head = runner.invoke(args=["audit", "head"])
    assert head.exit_code == 0
    anchor = head.output.splitlines()[0]
    seq = int(anchor.split(":")[0])
    ok = runner.invoke(args=["audit", "verify", "--anchor", anchor])
    assert ok.exit_code == 0 and "1 anchor(s) still match" in ok.output
    with trail.engine.begin() as c:  # a superuser cuts off the last two events
        c.execute(text("DELETE FROM audit_event WHERE seq >= :s"), {"s": seq - 1})
    assert verify(trail).ok  # the chain alone: intact
    # ... but the records whose events went no longer match the trail (gmp_mes.reconcile)
    plain = runner.invoke(args=["audit", "verify"])
    assert plain.exit_code == 1 and "has no audit event" in plain.output
    cut = runner.invoke(args=["audit", "verify", "--anchor", anchor])
    assert cut.exit_code == 1
    assert f"event {seq} of anchor" in cut.output and "events were removed" in cut.output


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_an_anchor_reveals_a_rewritten_trail(trail, runner) -> None:
    anchor = runner.invoke(args=["audit", "head"]).output.splitlines()[0]
    seq = int(anchor.split(":")[0])
    with trail.engine.begin() as c:  # the last event rewritten and properly re-hashed
        prev, record = c.execute(text("SELECT prev_hash, record FROM audit_event "
                                      "WHERE seq = :s"), {"s": seq}).one()
        forged = record.replace("operator", "admin")
        c.execute(text("UPDATE audit_event SET record = :r, hash = :h WHERE seq = :s"),
                  {"r": forged, "h": audit.chain_hash(prev, forged), "s": seq})
    assert verify(trail).ok  # the chain alone: intact
    result = runner.invoke(args=["audit", "verify", "--anchor", anchor])
    assert result.exit_code == 1 and "no longer has the hash" in result.output


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_audit_head_over_the_api_is_the_cli_anchor(db, make_user, login, runner) -> None:
    qa, operator = make_user("quinn", "qa"), make_user("otto", "operator")
    api = login(qa)  # the token itself is not an audited record: the head stays put
    body = api.get("/api/v1/audit/head").get_json()
    assert body["anchor"] == runner.invoke(args=["audit", "head"]).output.splitlines()[0]
    assert body["anchor"] == f"{body['seq']}:{body['hash']}"
    assert login(operator).get("/api/v1/audit/head").status_code == 403


@pytest.mark.parametrize("bad", ["12", "x:abc", "3:" + "g" * 64, ":" + "a" * 64])
def test_a_malformed_anchor_is_one_clear_error(db, runner, bad: str) -> None:
    result = runner.invoke(args=["audit", "verify", "--anchor", bad])
    assert result.exit_code == 2 and "SEQ:HASH" in result.output
    assert "Traceback" not in result.output


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_verify_detects_reordered_events(trail) -> None:
    with trail.engine.begin() as c:
        c.execute(text("UPDATE audit_event SET seq = -1 WHERE seq = 2"))
        c.execute(text("UPDATE audit_event SET seq = 2 WHERE seq = 3"))
        c.execute(text("UPDATE audit_event SET seq = 3 WHERE seq = -1"))
    result = verify(trail)
    assert not result.ok and result.bad_seq == 2


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_verify_detects_a_rewritten_chain_link(trail) -> None:
    """Re-hashing one event without re-hashing all later ones breaks the next link."""
    with trail.engine.begin() as c:
        row = c.execute(text("SELECT record, prev_hash FROM audit_event WHERE seq = 3")).one()
        forged = row.record.replace("operator", "admin")
        c.execute(
            text("UPDATE audit_event SET record = :r, hash = :h WHERE seq = 3"),
            {"r": forged, "h": audit.chain_hash(row.prev_hash, forged)},
        )
    result = verify(trail)
    assert not result.ok and result.bad_seq == 4


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_twenty_concurrent_writers_leave_one_unbroken_chain(db, make_site) -> None:
    make_site("LAB1")
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for round_ in range(3):
                with db.transaction(actor=Actor(f"writer{n}")) as s:
                    user = accounts.create_user(
                        s,
                        f"user{n}r{round_}",
                        password="long-enough-pw",
                        roles=["operator"],
                        site_code="LAB1",
                    )
                    user.full_name = f"Writer {n}"  # a second event in the same transaction
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    result = verify(db)
    assert result.ok, result.message()
    with db.engine.connect() as c:
        seqs = [r[0] for r in c.execute(text("SELECT seq FROM audit_event ORDER BY seq"))]
    assert seqs == list(range(1, len(seqs) + 1))
    assert count(db, "app_user") == 60


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_time_stamps_come_from_the_server_clock(db, make_site, login, make_user, client) -> None:
    frozen = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    clock.freeze(frozen)
    api = login(make_user("root", "admin"))
    response = api.post(
        "/api/v1/sites",
        json={"code": "HOSP2", "kind": "treatment", "name": "Hospital"},
        headers={"Date": "Mon, 01 Jan 1990 00:00:00 GMT"},
    )
    assert response.status_code == 201
    (event,) = audit_events(db, entity_type="site", entity_id="HOSP2")
    assert event["username"] == "root"
    assert '"at":"2031-01-02T03:04:05.000000Z"' in event["record"]


def test_user_roles_change_is_audited(db, make_user) -> None:
    make_user("dora", "operator")
    with db.transaction(actor=ADMIN) as s:
        user = s.scalar(select(User).where(User.username == "dora"))
        user.role_rows = [r for r in user.role_rows if r.role != "operator"]
        from gmp_mes.models import UserRole

        user.role_rows.append(UserRole(role="qc"))
    actions = [(e["action"], e["entity_id"]) for e in audit_events(db, entity_type="user_role")]
    assert ("delete", f"{user.id}:operator") in actions
    assert ("create", f"{user.id}:qc") in actions


@pytest.mark.requirement("21 CFR 11.10(e)")
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_verify_names_the_event_whatever_the_batch_size(trail, batch) -> None:
    """Verification streams in batches; a break is named exactly at any batch boundary."""
    with trail.engine.begin() as c:
        c.execute(text("UPDATE audit_event SET record = record || ' ' WHERE seq = 5"))
    with trail.engine.connect() as connection:
        result = audit.verify_chain(connection, batch=batch)
    assert not result.ok and result.bad_seq == 5 and result.checked == 4
    with trail.engine.begin() as c:
        c.execute(text("DELETE FROM audit_event WHERE seq >= 5"))
        c.execute(text("DELETE FROM audit_event WHERE seq = 3"))
    with trail.engine.connect() as connection:
        result = audit.verify_chain(connection, batch=batch)
    assert not result.ok and result.bad_seq == 3
