"""Print control: every print recorded and audited, reprints with a reason, voids."""

from __future__ import annotations

import io
import re
import threading
from datetime import date, timedelta

import pypdfium2 as pdfium
import pytest
import zxingcpp
from PIL import Image
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.errors import Conflict
from labels import services
from tests.helpers import assert_problem, audit_events, count


@pytest.fixture
def patient(app, db, make_site) -> dict:
    from identity import services as identity

    make_site("HOSP1", "treatment")
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        enrolled = identity.enrol_patient(
            s,
            given_name="Jeanne",
            family_name="Dupont",
            date_of_birth=date(1971, 5, 17),
            mrn="MRN-0001",
            treatment_site="HOSP1",
        )
        return {"coi_id": enrolled.coi_id, "wristband_item_id": enrolled.wristband_item_id}


@pytest.fixture
def make_item(app, db, patient, make_site):
    from identity import services as identity

    make_site("CLEAN1", "manufacturing")

    def make(kind: str = "final_product", status: str = "quarantine", **kw) -> str:
        kw.setdefault("expires_at", utcnow() + timedelta(days=270))
        with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
            item = identity.create_item(
                s,
                kind=kind,
                coi_id=patient["coi_id"],
                site_code="CLEAN1",
                status=status,
                batch_number=kw.pop("batch_number", "B-0001"),
                description="CAR-T bag",
                **kw,
            )
            return item.item_id

    return make


@pytest.fixture
def operator(make_user, login):
    person = make_user("olga", "operator")
    return login(person)


def decode_png(data: bytes) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(data)))]


def check(db, raw: str) -> services.PayloadCheck:
    with db.transaction(actor=Actor.system("test")) as s:
        return services.check_payload(s, raw)


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_a_print_is_recorded_and_audited(db, operator, make_item) -> None:
    item_id = make_item()
    response = operator.get(f"/api/v1/items/{item_id}/label?format=png&workstation=WS-7")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "image/png"
    label_id = response.headers["X-Label-Id"]
    payloads = decode_png(response.data)
    assert len(payloads) == 1
    assert payloads[0].startswith(f"GMP1:FP:{item_id}:")
    assert check(db, payloads[0]).ok
    # The printed copy carries serial 1; the 6-field form of the same content is the
    # same label without it (SPEC §4).
    assert payloads[0].split(":")[5] == "1"
    with db.transaction(actor=Actor.system("test")) as s:
        legacy = services.payload_for_item(s, item_id)
    assert legacy.split(":")[:5] == payloads[0].split(":")[:5] and len(legacy.split(":")) == 6

    listed = operator.get(f"/api/v1/items/{item_id}/labels").get_json()
    assert len(listed) == 1
    record = listed[0]
    assert record["label_id"] == label_id and record["format"] == "png"
    assert record["workstation"] == "WS-7" and record["printed_by"] == "olga"
    assert record["reprint"] is False and record["voided"] is False
    assert record["serial"] == "1"
    events = audit_events(db, entity_type="label", entity_id=label_id)
    assert [e["action"] for e in events] == ["create"]
    assert events[0]["username"] == "olga"


@pytest.mark.requirement("EU GMP Annex 11 §12.4")
def test_a_second_print_is_a_reprint_with_a_reason(db, operator, make_item) -> None:
    item_id = make_item()
    first = operator.get(f"/api/v1/items/{item_id}/label?format=zpl")
    assert first.status_code == 200
    assert "REPRINT" not in first.get_data(as_text=True)
    assert_problem(
        operator.get(f"/api/v1/items/{item_id}/label?format=zpl"), 409, "already_printed"
    )
    assert_problem(
        operator.get(f"/api/v1/items/{item_id}/label?format=zpl&reprint=true"),
        422,
        "validation_error",
    )
    again = operator.get(
        f"/api/v1/items/{item_id}/label?format=zpl&reprint=true&reason=label%20smudged&copies=2"
    )
    assert again.status_code == 200
    zpl = again.get_data(as_text=True)
    # two copies: two label formats, each its own payload (serials 2 and 3), REPRINT
    assert zpl.count("^XA") == 2 and zpl.count("REPRINT") >= 2 and "^PQ2," not in zpl
    original = first.get_data(as_text=True).split("^FDMA,")[1].split("^FS")[0]
    copies = [part.split("^FS")[0] for part in zpl.split("^FDMA,")[1:]]
    # the same label content; only the serial (and so the signature) differs
    assert [p.split(":")[:5] for p in copies] == [original.split(":")[:5]] * 2
    assert [original.split(":")[5]] + [p.split(":")[5] for p in copies] == ["1", "2", "3"]
    assert all(check(db, p).ok for p in [original, *copies])
    assert len(set(again.headers["X-Label-Id"].split(","))) == 2
    png = operator.get(f"/api/v1/items/{item_id}/label?format=png&reprint=1&reason=again")
    assert decode_png(png.data)
    # a PNG or SVG holds one label: several copies need PDF or ZPL
    assert_problem(
        operator.get(f"/api/v1/items/{item_id}/label?format=png&reprint=1&reason=x&copies=2"),
        422,
        "validation_error",
    )
    records = operator.get(f"/api/v1/items/{item_id}/labels").get_json()
    assert [(r["reprint"], r["reason"], r["serial"]) for r in records] == [
        (False, None, "1"),
        (True, "label smudged", "2"),
        (True, "label smudged", "3"),
        (True, "again", "4"),
    ]
    reprint_events = audit_events(db, entity_type="label", entity_id=records[1]["label_id"])
    assert reprint_events[0]["reason"] == "label smudged"
    assert count(db, "label_print") == 4


def test_reprint_of_a_label_never_printed_is_refused(operator, make_item) -> None:
    item_id = make_item()
    response = operator.get(f"/api/v1/items/{item_id}/label?format=png&reprint=true&reason=x")
    assert_problem(response, 409, "not_printed")


def test_unknown_item_is_404(operator) -> None:
    assert_problem(operator.get("/api/v1/items/ITM-ZZZZZZZZ/label?format=png"), 404)


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_void_makes_the_payload_fail_every_check(db, operator, make_user, login, make_item) -> None:
    item_id = make_item()
    response = operator.get(f"/api/v1/items/{item_id}/label?format=png")
    label_id = response.headers["X-Label-Id"]
    payload = decode_png(response.data)[0]
    assert check(db, payload).ok
    qa = login(make_user("quentin", "qa"))
    url = f"/api/v1/items/{item_id}/labels/{label_id}/void"
    voided = qa.post(url, json={"reason": "applied to the wrong bag"})
    assert voided.status_code == 200, voided.get_json()
    body = voided.get_json()
    assert body["voided"] is True and body["void_reason"] == "applied to the wrong bag"
    assert body["voided_by"] == "quentin"
    result = check(db, payload + "\r\n")
    assert [code for code, _ in result.reasons] == ["voided"]
    assert label_id in result.reasons[0][1]
    # a reprint after the void is a new copy (new serial) that verifies; a void is
    # never repeated
    reprint = operator.get(f"/api/v1/items/{item_id}/label?format=png&reprint=true&reason=x")
    assert reprint.status_code == 200
    assert check(db, decode_png(reprint.data)[0]).ok
    assert_problem(qa.post(url, json={"reason": "again"}), 409, "already_voided")
    assert_problem(
        qa.post(f"/api/v1/items/{item_id}/labels/LBL-NOPE/void", json={"reason": "x"}), 404
    )
    events = audit_events(db, entity_type="label_void", entity_id=label_id)
    assert len(events) == 1 and events[0]["reason"] == "applied to the wrong bag"


@pytest.mark.requirement("EU GMP Annex 11 §9")
def test_prints_and_voids_are_append_only(db, operator, make_item) -> None:
    item_id = make_item()
    label_id = operator.get(f"/api/v1/items/{item_id}/label?format=svg").headers["X-Label-Id"]
    operator.post(f"/api/v1/items/{item_id}/labels/{label_id}/void", json={"reason": "torn"})
    for statement in (
        "UPDATE label_print SET copies = 5",
        "DELETE FROM label_print",
        "UPDATE label_void SET reason = 'nothing'",
        "DELETE FROM label_void",
    ):
        with pytest.raises(DBAPIError), db.engine.begin() as c:
            c.execute(text(statement))
    assert count(db, "label_print") == 1 and count(db, "label_void") == 1


@pytest.mark.parametrize("status", ["blocked", "rejected"])
def test_items_that_must_not_be_used_print_with_a_banner(operator, make_item, status) -> None:
    item_id = make_item(status=status)
    response = operator.get(f"/api/v1/items/{item_id}/label?format=zpl")
    assert response.status_code == 200
    assert f"{status.upper()} - " in response.get_data(as_text=True)
    record = operator.get(f"/api/v1/items/{item_id}/labels").get_json()[0]
    assert record["status_banner"].startswith(status.upper())


def test_wristband_label(db, patient, operator) -> None:
    item_id = patient["wristband_item_id"]
    response = operator.get(f"/api/v1/items/{item_id}/label?format=png")
    assert response.status_code == 200, response.get_json()
    payload = decode_png(response.data)[0]
    assert payload.startswith(f"GMP1:WB:{item_id}:{patient['coi_id']}:-:")
    assert check(db, payload).ok


@pytest.mark.parametrize("paper", ["a4", "letter"])
def test_sheet_prints_every_item_and_decodes(db, operator, make_item, paper) -> None:
    items = [make_item() for _ in range(3)]
    response = operator.get(
        f"/api/v1/labels/sheet?items={','.join(items)}&paper={paper}&workstation=WS-1"
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/pdf"
    document = pdfium.PdfDocument(response.data)
    try:
        page = document[0]
        image = page.render(scale=200 / 72).to_pil()
        page.close()
    finally:
        document.close()
    found = sorted(r.text for r in zxingcpp.read_barcodes(image))
    assert len(found) == 3
    assert sorted(p.split(":")[2] for p in found) == sorted(items)
    assert all(check(db, p).ok for p in found)
    assert count(db, "label_print") == 3
    # printing the sheet again is a reprint of every label on it
    assert_problem(operator.get(f"/api/v1/labels/sheet?items={items[0]}"), 409, "already_printed")


def test_concurrent_first_prints_make_one_original(app, db, make_user, make_item) -> None:
    """Two workstations print the same new item at once: one original, one refusal."""
    item_id = make_item()
    user_id = make_user("olga", "operator").user_id
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def work() -> None:
        barrier.wait()
        try:
            with app.app_context(), db.transaction(actor=Actor("olga", user_id)) as s:
                services.print_label(s, item_id, services.PrintRequest("zpl"), user_id=user_id)
            outcomes.append("printed")
        except Conflict as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["already_printed", "printed"]
    assert count(db, "label_print") == 1


def page_login(client, person) -> str:
    """Session login through the form; returns the CSRF token for later forms."""
    login_page = client.get("/login").get_data(as_text=True)
    login_token = re.search(r'name="csrf_token" value="([^"]+)"', login_page)
    response = client.post(
        "/login",
        data={
            "username": person.username,
            "password": person.password,
            "csrf_token": login_token.group(1) if login_token else "",
        },
    )
    assert response.status_code == 302
    with client.session_transaction() as session:
        return session["csrf"]


def test_label_sheet_page(client, make_user, make_item, db) -> None:
    person = make_user("olga", "operator")
    items = [make_item(batch_number="B-SHEET"), make_item(batch_number="B-SHEET")]
    token = page_login(client, person)
    page = client.get("/labels")
    assert page.status_code == 200 and b"Label sheet" in page.data
    printed = client.post(
        "/labels/sheet",
        data={"csrf_token": token, "batch_number": "B-SHEET", "paper": "letter"},
    )
    assert printed.status_code == 200, printed.get_data(as_text=True)[:500]
    assert printed.mimetype == "application/pdf"
    assert sorted(r.item_id for i in items for r in services_labels(db, i)) == sorted(items)
    refused = client.post(
        "/labels/sheet", data={"csrf_token": token, "items": f"{items[0]}\n{items[1]}"}
    )
    assert refused.status_code == 302  # already printed: back to the form with the reason
    with client.session_transaction() as session:
        assert "already has a label" in str(session.get("_flashes"))
    empty = client.post("/labels/sheet", data={"csrf_token": token, "items": "  "})
    assert empty.status_code == 302
    reprinted = client.post(
        "/labels/sheet",
        data={"csrf_token": token, "items": items[0], "reprint": "true", "reason": "faded"},
    )
    assert reprinted.status_code == 200
    assert count(db, "label_print") == 3


def test_label_controls_page_prints_and_voids(app, client, make_user, make_item, db) -> None:
    person = make_user("olga", "operator", "qa")
    item_id = make_item()
    token = page_login(client, person)
    printed = client.post(
        f"/items/{item_id}/labels/print",
        data={"csrf_token": token, "format": "pdf", "workstation": "WS-3", "copies": "1"},
    )
    assert printed.status_code == 200 and printed.mimetype == "application/pdf"
    again = client.post(
        f"/items/{item_id}/labels/print", data={"csrf_token": token, "format": "pdf"}
    )
    assert again.status_code == 302  # refused (already printed): back to the item page
    with client.session_transaction() as session:
        assert "already has a label" in str(session.get("_flashes"))
    label_id = services_labels(db, item_id)[0].label_id
    voided = client.post(
        f"/items/{item_id}/labels/{label_id}/void", data={"csrf_token": token, "reason": "misprint"}
    )
    assert voided.status_code == 302
    assert services_labels(db, item_id)[0].voided
    forged = client.post(f"/items/{item_id}/labels/{label_id}/void", data={"reason": "no csrf"})
    assert forged.status_code == 403
    with app.test_request_context():
        from flask import render_template

        from gmp_mes.http import g

        g.user = None
        html = render_template(
            "labels/_label_controls.html", item_id=item_id, labels=services_labels(db, item_id)
        )
    assert "VOIDED" in html and "misprint" in html


def services_labels(db, item_id: str) -> list[services.LabelRecord]:
    with db.transaction(actor=Actor.system("test")) as s:
        return services.labels_of_item(s, item_id)


def test_item_ids_are_matched_whatever_their_case(operator, make_item) -> None:
    item_id = make_item()
    assert operator.get(f"/api/v1/items/{item_id.lower()}/label?format=svg").status_code == 200
    assert_problem(
        operator.get(f"/api/v1/items/{item_id}/label?format=svg"), 409, "already_printed"
    )
    listed = operator.get(f"/api/v1/items/{item_id.lower()}/labels").get_json()
    assert [r["item_id"] for r in listed] == [item_id]


def test_payload_digest_accepts_any_scanned_text() -> None:
    assert services.payload_digest(" gmp1:x\r\n") == services.payload_digest("GMP1:X")
    assert len(services.payload_digest("Ünïcode ✓ \udcff")) == 64
    assert services.normalise_scan(None) == ""  # type: ignore[arg-type]


def test_item_page_carries_the_label_controls(client, make_user, make_item, db) -> None:
    person = make_user("olga", "operator", "qa")
    item_id = make_item()
    token = page_login(client, person)
    page = client.get(f"/items/{item_id}").get_data(as_text=True)
    assert f'action="/items/{item_id}/labels/print"' in page
    assert "Void label" not in page  # nothing printed yet, nothing to void
    assert (
        client.post(
            f"/items/{item_id}/labels/print", data={"csrf_token": token, "format": "zpl"}
        ).status_code
        == 200
    )
    page = client.get(f"/items/{item_id}").get_data(as_text=True)
    assert "needs a reason" in page and "Void label" in page
    label_id = services_labels(db, item_id)[0].label_id
    assert f'<option value="{label_id}">' in page
    missing = client.post(f"/items/{item_id}/labels/void", data={"csrf_token": token})
    assert missing.status_code == 302 and not services_labels(db, item_id)[0].voided
    voided = client.post(
        f"/items/{item_id}/labels/void",
        data={"csrf_token": token, "label_id": label_id, "reason": "wrong bag"},
    )
    assert voided.status_code == 302
    record = services_labels(db, item_id)[0]
    assert record.voided and record.void_reason == "wrong bag"


def test_concurrent_voids_record_one_void(app, db, make_user, make_item) -> None:
    from gmp_mes.models import User

    item_id = make_item()
    user_id = make_user("olga", "operator").user_id
    with app.app_context(), db.transaction(actor=Actor("olga", user_id)) as s:
        printed = services.print_label(s, item_id, services.PrintRequest("svg"), user_id=user_id)
        label_id = printed.labels[0].label_id
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def work(reason: str) -> None:
        barrier.wait()
        try:
            with db.transaction(actor=Actor("olga", user_id)) as s:
                user = s.get(User, user_id)
                services.void_label(s, item_id, label_id, reason=reason, user=user)
            outcomes.append("voided")
        except Conflict as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=work, args=(f"reason {n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["already_voided", "voided"]
    assert count(db, "label_void") == 1


def test_a_label_with_new_content_supersedes_the_old_ones(db, operator, make_item) -> None:
    item_id = make_item()
    first = operator.get(f"/api/v1/items/{item_id}/label?format=png")
    old_payload = decode_png(first.data)[0]
    # A correction of the expiry (simulated in SQL: no service changes it today).
    with db.engine.begin() as c:
        c.execute(
            text("UPDATE item SET expires_at = :at WHERE item_id = :id"),
            {
                "at": (utcnow() + timedelta(days=10)).replace(tzinfo=None)
                if db.dialect == "sqlite"
                else utcnow() + timedelta(days=10),
                "id": item_id,
            },
        )
    second = operator.get(
        f"/api/v1/items/{item_id}/label?format=png&reprint=true&reason=expiry%20corrected"
    )
    new_payload = decode_png(second.data)[0]
    assert new_payload != old_payload
    assert check(db, new_payload).ok
    assert [code for code, _ in check(db, old_payload).reasons] == ["voided"]
    records = operator.get(f"/api/v1/items/{item_id}/labels").get_json()
    assert [r["voided"] for r in records] == [True, False]
    assert records[0]["void_reason"].startswith(f"superseded by {records[1]['label_id']}")
