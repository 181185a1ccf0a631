"""Installation qualification (SPEC §17, issue 22): each check fails when its condition
is broken, on both databases; the record is signed; the admin page shows the last run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.helpers import audit_events
from tests.test_pages_core import csrf_from, page_login
from validation import iq, signing

pytestmark = [pytest.mark.requirement("EU GMP Annex 11 §4"),
              pytest.mark.requirement("21 CFR 11.10(a)")]


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    # A production-grade secret: the settings check refuses the short test default.
    return app_config | {"secret_key": "s" * 48}


def _checks(app: Any, db: Any) -> dict[str, iq.Check]:
    return {c.name: c for c in iq.run_checks(app.config["GMP_SETTINGS"], db.engine)}


def _failed(runner: Any) -> tuple[int, str]:
    result = runner.invoke(args=["validate", "iq"])
    return result.exit_code, result.output


def test_a_fresh_installation_passes_and_the_record_is_signed(app: Any, db: Any,
                                                              runner: Any) -> None:
    assert all(c.ok for c in _checks(app, db).values()), _checks(app, db)
    result = runner.invoke(args=["validate", "iq", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["ok"] and {c["name"] for c in record["checks"]} == {
        "versions", "database reachable", "schema at head", "append-only triggers",
        "room booking overlaps refused", "signing key present and private",
        "settings valid"}
    with app.app_context():
        trusted = signing.installation_public_keys()
    assert signing.verify_document(record, trusted) is None
    tampered = record | {"ok": False}
    assert signing.verify_document(tampered, trusted) is not None
    stored = iq.last_record(app.config["GMP_SETTINGS"])
    assert stored is not None and stored.signature_problem is None
    assert stored.content["performed_at"] == record["performed_at"]
    # 21 CFR 11.10(e): the run is in the audit trail with the digest of its record.
    [event] = audit_events(db, entity_type="installation_qualification")
    assert event["action"] == "validation.iq" and json.loads(event["record"])["new"]["ok"]


@pytest.mark.requirement("EU GMP Annex 11 §9")
def test_a_dropped_append_only_trigger_fails(app: Any, db: Any, runner: Any) -> None:
    with db.engine.begin() as c:
        if db.dialect == "postgresql":
            c.execute(text("DROP TRIGGER custody_event_refuse_change ON custody_event"))
        else:
            c.execute(text("DROP TRIGGER custody_event_refuse_update"))
    check = _checks(app, db)["append-only triggers"]
    assert not check.ok and "UPDATE guard on custody_event" in check.detail
    code, output = _failed(runner)
    assert code == 1 and "FAIL  append-only triggers" in output


@pytest.mark.requirement("SPEC §13")
def test_a_dropped_booking_overlap_refusal_fails(app: Any, db: Any, runner: Any) -> None:
    assert _checks(app, db)["room booking overlaps refused"].ok
    with db.engine.begin() as c:
        if db.dialect == "postgresql":
            c.execute(text("ALTER TABLE room_booking DROP CONSTRAINT ex_room_booking_overlap"))
        else:
            c.execute(text("DROP TRIGGER room_booking_overlap_update"))
    check = _checks(app, db)["room booking overlaps refused"]
    assert not check.ok
    assert ("ex_room_booking_overlap" if db.dialect == "postgresql"
            else "room_booking_overlap_update") in check.detail
    code, output = _failed(runner)
    assert code == 1 and "FAIL  room booking overlaps refused" in output


def test_a_dropped_truncate_guard_fails_on_postgresql(app: Any, db: Any) -> None:
    if db.dialect != "postgresql":
        pytest.skip("TRUNCATE exists on PostgreSQL only")
    with db.engine.begin() as c:
        c.execute(text("DROP TRIGGER signature_refuse_truncate ON signature"))
    check = _checks(app, db)["append-only triggers"]
    assert not check.ok and "signature_refuse_truncate" in check.detail


def test_a_trigger_that_refuses_nothing_fails(app: Any, db: Any) -> None:
    with db.engine.begin() as c:
        if db.dialect == "postgresql":
            c.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_refuse_change"))
        else:
            c.execute(text("DROP TRIGGER audit_event_refuse_delete"))
            c.execute(text("CREATE TRIGGER audit_event_refuse_delete BEFORE DELETE ON "
                           "audit_event BEGIN SELECT 1; END"))
    check = _checks(app, db)["append-only triggers"]
    assert not check.ok and "audit_event_refuse" in check.detail


def test_a_world_readable_signing_key_fails(app: Any, db: Any, runner: Any) -> None:
    key = Path(app.config["GMP_SETTINGS"].signing_key)
    os.chmod(key, 0o644)
    check = _checks(app, db)["signing key present and private"]
    assert not check.ok and "mode 644" in check.detail
    code, output = _failed(runner)
    assert code == 1 and "FAIL  signing key present and private" in output
    os.chmod(key, 0o600)
    assert _checks(app, db)["signing key present and private"].ok


def test_a_missing_signing_key_fails(app: Any, db: Any) -> None:
    Path(app.config["GMP_SETTINGS"].signing_key).unlink()
    check = _checks(app, db)["signing key present and private"]
    assert not check.ok and "no signing key" in check.detail


def _step_back_one_head(db: Any) -> str:
    """Record a branch head's down revision instead of the head: that head is then not
    applied (whatever the heads are as branches grow)."""
    from alembic.script import ScriptDirectory

    from gmp_mes import migrate

    script = ScriptDirectory.from_config(migrate.alembic_config())
    head = sorted(migrate.current_heads(db.engine))[0]
    down = script.get_revision(head).down_revision
    assert isinstance(down, str), head
    with db.engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = :down WHERE version_num = :head"),
                  {"down": down, "head": head})
    return head


def test_a_schema_not_at_head_fails(app: Any, db: Any, runner: Any) -> None:
    head = _step_back_one_head(db)
    check = _checks(app, db)["schema at head"]
    assert not check.ok and f"{head} not applied" in check.detail
    code, output = _failed(runner)
    assert code == 1 and "FAIL  schema at head" in output
    assert "not recorded" in output  # no audit event into a schema that is not right


def test_a_schema_from_elsewhere_fails(app: Any, db: Any) -> None:
    with db.engine.begin() as c:
        c.execute(text("INSERT INTO alembic_version (version_num) VALUES ('zz_9999')"))
    check = _checks(app, db)["schema at head"]
    assert not check.ok and "unknown revision(s) zz_9999" in check.detail


def test_invalid_settings_fail(app: Any, db: Any) -> None:
    from dataclasses import replace

    settings = replace(app.config["GMP_SETTINGS"], secret_key="short", timezone="Mars/Olympus",
                       smtp_url="mail://user:hunter2@/x")
    check = iq._guard("settings valid", lambda: iq.check_settings(settings))
    assert not check.ok and "secret key shorter" in check.detail
    assert "unknown time zone 'Mars/Olympus'" in check.detail
    assert "SMTP URL is not" in check.detail and "hunter2" not in check.detail


@pytest.mark.requirement("21 CFR 11.10(d)")
def test_admin_page_shows_the_last_run_and_runs_it(app: Any, client: Any, db: Any,
                                                   make_user: Any) -> None:
    page_login(client, make_user("ada", "admin"))
    page = client.get("/admin/validation/iq").get_data(as_text=True)
    assert 'id="no-iq"' in page
    response = client.post("/admin/validation/iq", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 302
    page = client.get("/admin/validation/iq").get_data(as_text=True)
    assert "passed" in page and 'data-check="append-only triggers"' in page
    assert "of this installation" in page  # the stored record's signature checks out
    [event] = audit_events(db, entity_type="installation_qualification")
    assert event["username"] == "ada"
    # Without the CSRF token nothing runs.
    assert client.post("/admin/validation/iq", data={}).status_code in (400, 403)


@pytest.mark.requirement("21 CFR 11.10(d)")
def test_only_admins_reach_the_page(client: Any, make_user: Any) -> None:
    page_login(client, make_user("olga", "operator"))
    assert client.get("/admin/validation/iq").status_code == 403
