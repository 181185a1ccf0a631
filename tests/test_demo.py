"""`gmp-mes demo`: the seeded data covers every state, is made through the services
(so it is audited and signed like real work) and a second run changes nothing."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from demo.seed import DEMO_PASSWORD, PATIENTS, USERS
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
    states = _batch_states(app, db)
    expected = {"in_process": 2, "awaiting_release": 1, "on_hold": 1}
    # Two conditional releases: one waits for sterility, one's sterility turned positive
    # (its bags blocked, QA must still decide).
    expected.update({"released": 2, "conditionally_released": 2, "rejected": 1})
    assert dict(states) == expected
    shown = ", ".join(f"{k} {v}" for k, v in sorted(expected.items()))
    assert f"{sum(expected.values())} batches ({shown})" in seeded.output, seeded.output
    assert count(db, "site") == 4
    assert count(db, "patient") == len(PATIENTS)
    items = _item_states(app, db)
    # Every patient has a wristband; two collections wait (one inside, one past its
    # hold time), the bags of the completed batches wait in quarantine.
    assert items[("starting_material", "available")] == 1
    # The batch that has recorded only its receipt still holds its starting material
    # (in_process until the selection step consumes it).
    assert items[("starting_material", "in_process")] == 1
    assert items[("starting_material", "expired")] == 1
    assert items[("final_product", "quarantine")] >= 4
    # Bags along the whole path: in LN2, in transit, at the hospital, thawed, infused.
    for status in ("released", "conditionally_released", "shipped", "received", "thawed",
                   "administered", "rejected", "blocked"):
        assert items[("final_product", status)] >= 1, (status, items)
    assert items[("wristband", "available")] == count(db, "patient")
    # Deviations: the held batch has an open major one; a running batch a minor limit one
    # that does not hold it.
    from batches import services as batches

    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        found = {(b.status, d.severity, d.status)
                 for b in batches.list_batches(s) for d in batches.deviations_of(s, b)}
    assert ("on_hold", "major", "open") in found
    assert ("in_process", "minor", "open") in found
    # The process was approved by QA with a signature, the steps were signed.
    assert audit_events(db, entity_type="process_version")
    assert count(db, "signature") > 20
    # Open alerts: the hold-time warning and expiry from the sweep, the forged label scan.
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        open_kinds = {a.kind for a in alerts.list_alerts(s, status="open")}
    assert {"expiry_warning", "hold_time_exceeded", "label_forged"} <= open_kinds
    assert "qc_positive_after_release" in open_kinds
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


@pytest.mark.requirement("21 CFR 11.300(a)")
def test_demo_never_seeds_an_installation_that_has_people(
    app: Flask, db: Database, runner: Any, make_user: Any
) -> None:
    # The demo's accounts have a published password: a real installation never gets them.
    make_user("olga", "operator")
    before = {table: count(db, table) for table in ("audit_event", "app_user", "site")}
    result = runner.invoke(args=["demo"])
    assert result.exit_code == 0, result.output  # `make run` goes on to serve
    assert result.output.startswith("demo: skipped: this installation already has users")
    assert {table: count(db, table) for table in before} == before
    assert count(db, "patient") == 0


def test_every_page_renders_for_every_demo_user(app: Flask, db: Database, client: Any,
                                                seeded: Any) -> None:
    """The first `make run`: every page of the navigation, every batch record, patient
    and item page renders for every role on the demo data (no 500 on either database)."""
    import re

    from batches import services as batches
    from identity.models import Item

    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        numbers = [b.batch_number for b in batches.list_batches(s)]
        # One item of each kind and status, and the patients they belong to.
        by_state = {(i.kind, i.status): i for i in s.scalars(select(Item).order_by(Item.item_id))}
        items = sorted(i.item_id for i in by_state.values())
        cois = sorted({i.coi_id for i in by_state.values()})[:4]
    record_pages = ([f"/batches/{n}" for n in numbers] + [f"/qc/{n}" for n in numbers]
                    + [f"/items/{i}" for i in items] + [f"/patients/{c}" for c in cois])
    html = {"Accept": "text/html"}
    for username, _roles, _, _ in USERS:
        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        login = client.post("/login", data={"username": username, "password": DEMO_PASSWORD,
                                            "csrf_token": token})
        assert login.status_code == 302, username
        dashboard = client.get("/", headers=html)
        assert dashboard.status_code == 200
        links = set(re.findall(r'<nav aria-label="Main">(.*?)</nav>',
                               dashboard.get_data(as_text=True), re.S)[0].split('href="')[1:])
        paths = sorted({link.split('"')[0] for link in links})
        assert len(paths) >= 3, (username, paths)
        for path in paths:  # the navigation offers only what the role may open
            response = client.get(path, headers=html)
            assert response.status_code == 200, (username, path, response.status_code)
        for path in record_pages:
            response = client.get(path, headers=html)
            # 403: the page is not for this role (e.g. QC entry for a clinician).
            assert response.status_code in (200, 403), (username, path, response.status_code)
        client.post("/logout", data={"csrf_token": token})
