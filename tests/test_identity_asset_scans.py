"""The scan station and POST /scans with labels of material lots and equipment (SPEC §7,
§11): a verified LOT or EQP label is no item; the domain that keeps it answers through
``registry.scanned_subjects`` (a test provider here), none answering is
``unknown_subject``; every scan is in the audit trail. Where a patient's item is scanned
(a step's identity scan, a label check, batch start, the bedside) such a label is refused
``not_an_item``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from sqlalchemy.orm import Session

from gmp_mes import registry
from gmp_mes.registry import ScannedSubject, Seam
from labels import services as labels
from tests.helpers import assert_problem, audit_events
from tests.test_batches_fixtures import Plant, plant_fixture  # noqa: F401
from tests.test_batches_label_check import filled, label_check_body, v2_fixture  # noqa: F401
from tests.test_batches_starting_material import receipt_body
from tests.test_pages_core import csrf_from, page_login

P = TypeVar("P")
EXPIRES = datetime(2027, 3, 31, 21, 59, tzinfo=UTC)


@contextmanager
def provided(seam: Seam[P], owner: str, provider: P) -> Iterator[None]:
    """``seam.provide(owner, provider)`` for the block only: the seam's providers (those
    the installed domains registered) are as before afterwards."""
    before = dict(seam._providers)
    seam.provide(owner, provider)
    try:
        yield
    finally:
        seam._providers.clear()
        seam._providers.update(before)


@contextmanager
def only(seam: Seam[P], owner: str | None = None, provider: P | None = None) -> Iterator[None]:
    """The seam with no provider but ``provider`` (none at all when not given)."""
    before = dict(seam._providers)
    seam._providers.clear()
    if owner is not None and provider is not None:
        seam.provide(owner, provider)
    try:
        yield
    finally:
        seam._providers.clear()
        seam._providers.update(before)


def lots(reasons: list[dict[str, str]] | None = None,
         status: str = "released") -> Callable[[Session, str, str], ScannedSubject | None]:
    """A provider that knows one lot, LOT-000123, and nothing else."""

    def answer(session: Session, kind_code: str, subject_id: str) -> ScannedSubject | None:
        if (kind_code, subject_id) != ("LOT", "LOT-000123"):
            return None
        return ScannedSubject(kind="lot", subject_id=subject_id,
                              title="IL-2 (Proleukin) lot LOT-000123", status=status,
                              expires_at=EXPIRES, reasons=list(reasons or []),
                              url="/lots/LOT-000123")

    return answer


def printed_label(app, db, person, kind_code: str = "LOT",
                  subject_id: str = "LOT-000123") -> str:
    subject = labels.AssetLabel(kind_code, subject_id, "MATERIAL LOT", ("IL-2",),
                                EXPIRES if kind_code == "LOT" else None, None, "UTC")
    with app.app_context(), db.transaction(actor=person.actor) as s:
        printed = labels.print_asset_label(s, subject, labels.PrintRequest(format="zpl"),
                                           user_id=person.user_id)
    return printed.payloads[0]


@pytest.fixture
def olga(make_user):
    return make_user("olga", "operator")


def post_scan(api, payload: str, **extra: Any) -> dict[str, Any]:
    response = api.post("/api/v1/scans", json={"payload": payload, "workstation": "WH-1",
                                               **extra})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.mark.requirement("SPEC §11")
@pytest.mark.requirement("SPEC §7")
def test_a_lot_label_scans_as_the_lot_its_domain_knows(app, db, olga, login) -> None:
    payload = printed_label(app, db, olga)
    api = login(olga)
    with provided(registry.scanned_subjects, "test-lots", lots()):
        answer = post_scan(api, payload)
    assert answer == {
        "ok": True, "item": None, "coi_id": None, "status": "released",
        "expires_at": "2027-03-31T21:59:00+00:00", "reasons": [], "batch_number": None,
        "subject": {"kind": "lot", "id": "LOT-000123",
                    "title": "IL-2 (Proleukin) lot LOT-000123", "url": "/lots/LOT-000123"}}
    [event] = audit_events(db, entity_type="scan", entity_id="LOT-000123")
    assert event["action"] == "scan" and event["username"] == "olga"
    new = json.loads(event["record"])["new"]
    assert (new["kind_code"], new["subject_id"], new["serial"], new["workstation"],
            new["ok"], new["status"], new["site"]) == (
        "LOT", "LOT-000123", "1", "WH-1", True, "released", "CLEAN1")


@pytest.mark.requirement("SPEC §11")
def test_what_the_domain_refuses_stops_the_scan(app, db, olga, login) -> None:
    payload = printed_label(app, db, olga)
    expired = [{"code": "lot_expired", "message": "lot LOT-000123 expired"}]
    with provided(registry.scanned_subjects, "test-lots", lots(expired, "expired")):
        answer = post_scan(login(olga), payload)
    assert (answer["ok"], answer["status"], answer["reasons"]) == (False, "expired", expired)
    assert answer["subject"]["id"] == "LOT-000123" and answer["item"] is None
    [event] = audit_events(db, entity_type="scan", entity_id="LOT-000123")
    assert event["action"] == "scan.refused"


@pytest.mark.requirement("SPEC §11")
def test_a_label_no_domain_knows_is_an_unknown_subject(app, db, olga, login) -> None:
    lot = printed_label(app, db, olga)
    equipment = printed_label(app, db, olga, "EQP", "BSC-01")
    api = login(olga)
    with only(registry.scanned_subjects):
        answer = post_scan(api, lot)
    assert answer["ok"] is False and answer["subject"] is None and answer["item"] is None
    assert [r["code"] for r in answer["reasons"]] == ["unknown_subject"]
    assert "LOT-000123" in answer["reasons"][0]["message"]
    # a provider that knows lots only says nothing of equipment
    with only(registry.scanned_subjects, "test-lots", lots()):
        answer = post_scan(api, equipment)
    assert [r["code"] for r in answer["reasons"]] == ["unknown_subject"]
    assert [e["action"] for e in audit_events(db, entity_type="scan", entity_id="BSC-01")] == [
        "scan.refused"]


def test_a_signed_but_never_printed_lot_label_is_an_unknown_copy(app, db, olga, login) -> None:
    printed_label(app, db, olga)
    with app.app_context():
        from labels import payload as lp

        forged = lp.sign(labels.keyring().private_key, "LOT", "LOT-000123", "-", EXPIRES, 2)
    with provided(registry.scanned_subjects, "test-lots", lots()):
        answer = post_scan(login(olga), forged)
    assert answer["ok"] is False and [r["code"] for r in answer["reasons"]] == ["unknown_copy"]
    assert answer["subject"]["id"] == "LOT-000123"  # what the label claims, refused


def test_a_lot_label_checked_against_a_batch_is_not_an_item(app, db, olga, login) -> None:
    payload = printed_label(app, db, olga)
    with provided(registry.scanned_subjects, "test-lots", lots()):
        answer = post_scan(login(olga), payload, batch_number="B-0001")
    assert answer["ok"] is False and [r["code"] for r in answer["reasons"]] == ["not_an_item"]
    assert "not of a patient's bag" in answer["reasons"][0]["message"]


@pytest.mark.requirement("SPEC §7 scan station page")
def test_the_scan_station_shows_the_lot(app, db, olga, client) -> None:
    payload = printed_label(app, db, olga)
    page_login(client, olga)
    token = csrf_from(client.get("/scan").get_data(as_text=True))
    with provided(registry.scanned_subjects, "test-lots", lots()):
        posted = client.post("/scan", data={"payload": payload, "csrf_token": token})
    assert posted.status_code == 302
    shown = client.get(posted.headers["Location"]).get_data(as_text=True)
    assert 'class="verdict ok"' in shown
    assert '<a href="/lots/LOT-000123">IL-2 (Proleukin) lot LOT-000123</a>' in shown
    assert '<span class="badge ok">released</span>' in shown
    assert "2027-03-31 23:59" in shown  # the site's local time (Europe/Paris)
    # a refused one: STOP, with the badge of the status and the reason
    expired = [{"code": "lot_expired", "message": "lot LOT-000123 expired"}]
    with provided(registry.scanned_subjects, "test-lots", lots(expired, "expired")):
        client.post("/scan", data={"payload": payload, "csrf_token": token})
    shown = client.get("/scan").get_data(as_text=True)
    assert 'class="verdict stop"' in shown and '<span class="badge stop">expired</span>' in shown
    assert "lot_expired" in shown and "lot LOT-000123 expired" in shown
    with only(registry.scanned_subjects):
        client.post("/scan", data={"payload": payload, "csrf_token": token})
    shown = client.get("/scan").get_data(as_text=True)
    assert 'class="verdict stop"' in shown and "unknown_subject" in shown


def test_the_header_search_opens_the_lot_page(app, db, olga, client) -> None:
    payload = printed_label(app, db, olga)
    page_login(client, olga)
    with provided(registry.scanned_subjects, "test-lots", lots()):
        found = client.get("/search", query_string={"q": payload})
        assert found.status_code == 302 and found.headers["Location"].endswith("/lots/LOT-000123")
        with app.app_context():
            from labels import payload as lp

            never = lp.sign(labels.keyring().private_key, "LOT", "LOT-000123", "-", EXPIRES, 9)
        refused = client.get("/search", query_string={"q": never},
                             headers={"Accept": "text/html"})
        assert refused.status_code == 409 and "refused" in refused.get_data(as_text=True)
    with only(registry.scanned_subjects):
        missing = client.get("/search", query_string={"q": payload},
                             headers={"Accept": "text/html"})
    assert missing.status_code == 404


@pytest.mark.requirement("autologous rule")
def test_a_lot_label_is_refused_as_a_steps_identity_scan(plant: Plant, login) -> None:
    payload = printed_label(plant.app, plant.db, plant.operator)
    number = plant.start()
    api = login(plant.operator)
    with provided(registry.scanned_subjects, "test-lots", lots()):
        problem = assert_problem(
            api.post(f"/api/v1/batches/{number}/steps/receipt",
                     json=receipt_body(plant, number, scan=payload)), 409, "not_an_item")
    assert "LOT-000123" in problem["detail"] and "not of a patient's bag" in problem["detail"]
    # and as the starting material of a batch
    problem = assert_problem(api.post("/api/v1/batches", json={"item_id": payload}), 409,
                             "not_an_item")
    assert "item_id" in problem["detail"]


@pytest.mark.requirement("autologous rule")
def test_a_lot_label_is_refused_in_a_label_check(v2: Plant, login) -> None:
    payload = printed_label(v2.app, v2.db, v2.operator)
    number = filled(v2, bags=1)
    api = login(v2.operator)
    with provided(registry.scanned_subjects, "test-lots", lots()):
        problem = assert_problem(
            api.post(f"/api/v1/batches/{number}/steps/label_check",
                     json=label_check_body(v2, [*v2.bag_labels(number), payload])),
            409, "not_an_item")
    assert "not of a patient's bag" in problem["errors"]["scans"][0]


def test_a_lot_label_is_no_bag_at_the_bedside(plant: Plant, login) -> None:
    payload = printed_label(plant.app, plant.db, plant.operator)
    with plant.tx(plant.clinician) as s:
        from identity import services as identity

        patient = identity.enrol_patient(
            s, given_name="Ada", family_name="Byron", date_of_birth=datetime(1980, 1, 1).date(),
            mrn="MRN-LOT", treatment_site=plant.clinician.site)
        wristband = labels.payload_for_item(s, patient.wristband_item_id)
    answer = login(plant.clinician).post("/api/v1/bedside/verify", json={
        "patient_payload": wristband, "product_payload": payload})
    body = answer.get_json()
    assert body["match"] is False
    assert [r["code"] for r in body["reasons"]] == ["product_label_invalid"]
    assert "not_an_item" in body["reasons"][0]["message"]


def test_the_providers_of_the_seam_are_restored(app) -> None:
    before = registry.scanned_subjects.providers()
    with provided(registry.scanned_subjects, "test-lots", lots()):
        assert len(registry.scanned_subjects.providers()) == len(before) + 1
    with only(registry.scanned_subjects):
        assert registry.scanned_subjects.providers() == []
    assert registry.scanned_subjects.providers() == before
