# ruff: noqa: F811  (pytest fixtures imported from tests.test_labels_print)
"""The printer outbox: a networked print is recorded pending, sent with no transaction
open, then printed or failed; a crash leaves a pending job that is swept."""

from __future__ import annotations

import socket
import threading
from datetime import timedelta

import pytest

from gmp_mes.audit import Actor
from gmp_mes.clock import clock, utcnow
from labels import services
from tests.helpers import assert_problem, audit_events, count, trail_time
from tests.test_labels_print import make_item, operator, patient  # noqa: F401


@pytest.fixture
def quick_printer(app_config) -> None:
    app_config["printer_timeout"] = 2


def _jobs(db, item_id: str) -> list:
    with db.transaction(actor=Actor.system("test")) as s:
        return [(j.status, j.first_serial, j.failure) for j in
                services.print_jobs_of_item(s, item_id)]


@pytest.mark.requirement("EU GMP Annex 11 §12.4")
def test_a_hanging_printer_fails_the_job_and_holds_no_lock_during_the_send(
        quick_printer, app, db, operator, make_item, make_user, login) -> None:
    admin = login(make_user("adam", "admin"))
    other = login(make_user("otto", "operator"))
    server = socket.create_server(("127.0.0.1", 0))
    admin.post("/api/v1/sites/CLEAN1/labels/printers",
               json={"name": "hangs", "host": "127.0.0.1", "port": server.getsockname()[1]})
    item_id, second_item = make_item(), make_item()
    seen: dict = {}
    release = threading.Event()

    def serve() -> None:
        connection, _ = server.accept()
        chunks = []
        while data := connection.recv(65536):
            chunks.append(data)
        seen["job"] = b"".join(chunks)
        # While the sender waits for the close: the same item is pending (the item row
        # and, on SQLite, the writer lock are free), another write transaction completes.
        seen["same"] = other.get(f"/api/v1/items/{item_id}/label?format=png")
        seen["other"] = other.get(f"/api/v1/items/{second_item}/label?format=png")
        release.wait(20)  # hangs beyond the timeout, never closes by itself
        connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        response = operator.post(f"/api/v1/items/{item_id}/label/print",
                                 json={"printer": "hangs"})
    finally:
        release.set()
        thread.join(timeout=10)
        server.close()
    body = assert_problem(response, 409, "printer_unreachable")
    assert "did not close the connection" in body["detail"]
    assert seen["job"].startswith(b"^XA") and seen["job"].rstrip().endswith(b"^XZ")
    same = seen["same"]
    assert same.status_code == 409 and "is being printed" in same.get_json()["detail"]
    assert seen["other"].status_code == 200  # a write committed during the send
    assert count(db, "label_print") == 1  # only the other item's label
    ((status, serial, failure),) = _jobs(db, item_id)
    assert status == "failed" and serial == 1 and "did not close" in failure
    events = audit_events(db, entity_type="label_print_job")
    assert [e["action"] for e in events] == ["create", "update"]
    # The failed job's serial counts as no copy: the next print is the original.
    first = operator.get(f"/api/v1/items/{item_id}/label?format=zpl")
    assert first.status_code == 200, first.get_json()
    labels = operator.get(f"/api/v1/items/{item_id}/labels").get_json()
    assert [(lbl["reprint"], lbl["serial"]) for lbl in labels] == [(False, "2")]


def test_a_pending_job_left_by_a_crash_is_swept(app, db, operator, make_item,
                                                make_user) -> None:
    from gmp_mes.models import User

    clock.freeze(max(utcnow(), trail_time(db)))
    item_id, other_item = make_item(), make_item()
    person = make_user("petra", "operator")
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        services.add_printer(s, "CLEAN1", name="zt", host="127.0.0.1", port=9)
    for item in (item_id, other_item):  # transaction 1 committed, then the crash
        with app.app_context(), db.transaction(actor=Actor("petra", person.user_id)) as s:
            services.queue_print_job(s, item, "zt", services.PrintRequest("zpl"),
                                     user=s.get(User, person.user_id))
    assert count(db, "label_print") == 0
    assert_problem(operator.get(f"/api/v1/items/{item_id}/label?format=zpl"), 409,
                   "already_printed")  # in flight: not a second original
    clock.advance(services.stale_after() + timedelta(seconds=1))
    # The next print of the item fails the stale job (audited) and is the original.
    printed = operator.get(f"/api/v1/items/{item_id}/label?format=zpl")
    assert printed.status_code == 200, printed.get_json()
    ((status, _, failure),) = _jobs(db, item_id)
    assert status == "failed" and "no answer from the printer" in failure
    # The scheduler sweep fails the other one.
    assert services.sweep_job(app) == [f"print job {_job_id(db, other_item)} failed (stale)"]
    assert [j[0] for j in _jobs(db, other_item)] == ["failed"]
    updates = [e for e in audit_events(db, entity_type="label_print_job")
               if e["action"] == "update"]
    assert len(updates) == 2 and all("stale" in (e["reason"] or "") for e in updates)


def _job_id(db, item_id: str) -> str:
    with db.transaction(actor=Actor.system("test")) as s:
        return services.print_jobs_of_item(s, item_id)[0].job_id
