"""`gmp-mes demo`: the seeded data covers every state, is made through the services
(so it is audited and signed like real work) and a second run changes nothing."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from demo.seed import DEMO_PASSWORD, NEEDS_QC, PATIENTS, USERS, _qc_services
from gmp_mes import accounts, alerts
from gmp_mes.audit import Actor
from gmp_mes.db import Database
from tests.helpers import audit_events, count


def _batch_states(app: Flask, db: Database) -> Counter[str]:
    from batches import services as batches

    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        return Counter(b.status for b in batches.list_batches(s))


def _item_states(app: Flask, db: Database) -> Counter[tuple[str, str]]:
    from identity.models import Item

    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        return Counter((i.kind, i.status) for i in s.scalars(select(Item)))


@pytest.fixture
def seeded(app: Flask, runner: Any) -> Any:
    result = runner.invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    return result


def test_demo_seeds_every_state_through_the_services(app: Flask, db: Database,
                                                     seeded: Any) -> None:
    qc_ready = _qc_services() is not None
    states = _batch_states(app, db)
    expected = {"in_process": 2, "awaiting_release": 1, "on_hold": 1}
    if qc_ready:
        expected.update({"released": 2, "conditionally_released": 1, "rejected": 1})
    assert dict(states) == expected
    assert count(db, "site") == 4
    assert count(db, "patient") == len(PATIENTS) - (0 if qc_ready else len(
        [p for p in PATIENTS if p[5] in NEEDS_QC]))
    items = _item_states(app, db)
    # Every patient has a wristband; two collections wait (one inside, one past its
    # hold time), the bags of the completed batches wait in quarantine.
    assert items[("starting_material", "available")] == 1
    assert items[("starting_material", "expired")] == 1
    assert items[("final_product", "quarantine")] >= 4
    assert items[("wristband", "available")] == count(db, "patient")
    # The process was approved by QA with a signature, the steps were signed.
    assert audit_events(db, entity_type="process_version")
    assert count(db, "signature") > 20
    # Open alerts: the hold-time warning and expiry from the sweep, the forged label scan.
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        open_kinds = {a.kind for a in alerts.list_alerts(s, status="open")}
    assert {"expiry_warning", "hold_time_exceeded", "label_forged"} <= open_kinds
    assert "password" in seeded.output and DEMO_PASSWORD in seeded.output


def test_every_demo_user_logs_in_with_the_printed_password(
    app: Flask, db: Database, seeded: Any
) -> None:
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        for username, roles, site, _ in USERS:
            user = accounts.authenticate(s, username, DEMO_PASSWORD)
            assert user.roles == frozenset(roles) and user.site.code == site


def test_second_run_is_clean_and_changes_nothing(app: Flask, db: Database, runner: Any,
                                                 seeded: Any) -> None:
    before = {table: count(db, table) for table in ("audit_event", "item", "alert", "app_user")}
    again = runner.invoke(args=["demo"])
    assert again.exit_code == 0, again.output
    assert again.output.strip() == "demo: the demo data already exists; nothing to do"
    assert {table: count(db, table) for table in before} == before


def test_demo_refuses_next_to_existing_users_of_the_same_names(
    app: Flask, db: Database, runner: Any, make_site: Any, make_user: Any
) -> None:
    # A plant that already has an `operator2` is not a fresh instance: the demo leaves it
    # alone instead of failing half-way (the whole set is one transaction).
    make_site("PLANT", "manufacturing")
    make_user("operator2", "operator", site="PLANT")
    users_before = count(db, "app_user")
    result = runner.invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    assert "already exists" in result.output
    assert count(db, "app_user") == users_before and count(db, "patient") == 0
