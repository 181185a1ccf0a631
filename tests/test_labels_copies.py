"""Labels per copy (SPEC §4, §7; issue 13): every printed copy has its own serial in the
signed payload, a void voids that copy only, a replacement voids a damaged copy and
prints a new one in one step, only the item's current site and QA may do either, and
the 6-field labels printed before serials keep verifying."""

from __future__ import annotations

import io
import re
import threading
from datetime import timedelta
from typing import Any

import pypdfium2 as pdfium
import pytest
import zxingcpp
from PIL import Image
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from labels import services
from tests.helpers import assert_problem, audit_events, count
from tests.test_identity_fixtures import (  # noqa: F401
    OTHER_TREATMENT,
    PLANT,
    TREATMENT,
    World,
    world_fixture,
)

COPY_PAYLOAD = re.compile(
    r"GMP1:(FP|WB):ITM-[A-Z2-7]{8}:[0-9A-Z]{13}[0-9A-Z*]:([0-9]{12}|-):[1-9][0-9]*:[A-Z2-7]{103}"
)


def zpl_payloads(zpl: str) -> list[str]:
    return re.findall(r"\^FDMA,([^\^]+)\^FS", zpl)


def decode_png(data: bytes) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(data)))]


def decode_pdf(data: bytes) -> list[str]:
    """Every QR code on every page, read off the rendered PDF as a scanner would."""
    document = pdfium.PdfDocument(data)
    found: list[str] = []
    try:
        for index in range(len(document)):
            page = document[index]
            image = page.render(scale=200 / 72).to_pil()
            page.close()
            found += [r.text for r in zxingcpp.read_barcodes(image)]
    finally:
        document.close()
    return found


def print_zpl(api: Any, item_id: str, copies: int = 1, reprint: bool = False) -> dict[str, Any]:
    query = f"format=zpl&copies={copies}"
    if reprint:
        query += "&reprint=true&reason=more%20copies"
    response = api.get(f"/api/v1/items/{item_id}/label?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return {
        "label_ids": response.headers["X-Label-Id"].split(","),
        "payloads": zpl_payloads(response.get_data(as_text=True)),
    }


def scan(api: Any, payload: str) -> dict[str, Any]:
    response = api.post("/api/v1/scans", json={"payload": payload, "workstation": "WS-1"})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def bedside(api: Any, wristband: str, bag: str) -> dict[str, Any]:
    response = api.post(
        "/api/v1/bedside/verify", json={"patient_payload": wristband, "product_payload": bag}
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def codes(body: dict[str, Any]) -> set[str]:
    return {r["code"] for r in body["reasons"]}


def alert_kinds(world: World) -> list[str]:
    with world.db.engine.connect() as c:
        return list(c.execute(text("SELECT kind FROM alert ORDER BY id")).scalars())


@pytest.fixture
def ward(world: World, login, make_user) -> dict[str, Any]:
    """A patient treated at HOSP1 with a released bag there, and the people of the ward."""
    patient = world.enrol()
    bag = world.item(
        patient["coi_id"], status="released", site=TREATMENT,
        expires_at=utcnow() + timedelta(days=30),
    )
    return {
        "world": world,
        "patient": patient,
        "wristband": patient["wristband_item_id"],
        "bag": bag,
        "clinician": login(world.clinician),
        "plant_operator": login(world.operator),  # at CLEAN1, not where the bag is
        "ward_operator": login(make_user("wardop", "operator", site=TREATMENT)),
        "qa": login(world.qa),  # QA at CLEAN1: may void anywhere
    }


@pytest.mark.requirement("21 CFR 11.10(e)")
@pytest.mark.requirement("SPEC §4")
def test_voiding_one_of_two_copies_leaves_the_other_valid_at_scan_and_bedside(ward) -> None:
    world, clinician = ward["world"], ward["clinician"]
    bag = print_zpl(ward["ward_operator"], ward["bag"], copies=2)
    band = print_zpl(clinician, ward["wristband"], copies=2)
    for printed in (bag, band):
        assert len(printed["payloads"]) == 2 and len(set(printed["payloads"])) == 2
        assert all(COPY_PAYLOAD.fullmatch(p) for p in printed["payloads"]), printed
        assert [p.split(":")[5] for p in printed["payloads"]] == ["1", "2"]
    assert bedside(clinician, band["payloads"][0], bag["payloads"][0])["match"] is True

    void = ward["ward_operator"].post(
        f"/api/v1/items/{ward['bag']}/labels/{bag['label_ids'][0]}/void",
        json={"reason": "bag label torn"},
    )
    assert void.status_code == 200, void.get_json()
    assert void.get_json()["voided"] is True and void.get_json()["serial"] == "1"
    void = ward["qa"].post(
        f"/api/v1/items/{ward['wristband']}/labels/{band['label_ids'][0]}/void",
        json={"reason": "wristband smudged"},
    )
    assert void.status_code == 200, void.get_json()

    # the other copies stay valid at the scan station and at the bedside
    assert scan(ward["ward_operator"], bag["payloads"][1])["ok"] is True
    assert bedside(clinician, band["payloads"][1], bag["payloads"][1])["match"] is True
    # the voided copies fail every online check
    stopped = scan(ward["ward_operator"], bag["payloads"][0])
    assert stopped["ok"] is False and "voided" in codes(stopped)
    refused = bedside(clinician, band["payloads"][1], bag["payloads"][0])
    assert refused["match"] is False and codes(refused) == {"product_label_invalid"}
    assert "voided" in refused["reasons"][0]["message"]
    refused = bedside(clinician, band["payloads"][0], bag["payloads"][1])
    assert refused["match"] is False and "patient_label_invalid" in codes(refused)
    assert "label_voided" in alert_kinds(world)

    listed = ward["qa"].get(f"/api/v1/items/{ward['bag']}").get_json()["labels"]
    assert [(x["serial"], x["voided"]) for x in listed] == [("1", True), ("2", False)]
    assert all({"label_id", "serial", "format", "printed_at", "voided"} <= set(x) for x in listed)


@pytest.mark.requirement("21 CFR 11.10(e)")
@pytest.mark.requirement("SPEC §4")
def test_a_replacement_verifies_and_the_voided_copy_raises_the_voided_alert(ward) -> None:
    world, clinician = ward["world"], ward["clinician"]
    bag = print_zpl(ward["ward_operator"], ward["bag"])["payloads"][0]
    band = print_zpl(clinician, ward["wristband"], copies=2)
    damaged_id, damaged = band["label_ids"][0], band["payloads"][0]

    url = f"/api/v1/items/{ward['wristband']}/labels/{damaged_id}/replace"
    response = clinician.post(url, json={"reason": "wristband wet, unreadable", "format": "png"})
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.mimetype == "image/png"
    assert response.headers["X-Replaced-Label-Id"] == damaged_id
    new_id = response.headers["X-Label-Id"]
    (replacement,) = decode_png(response.data)
    assert COPY_PAYLOAD.fullmatch(replacement) and replacement.split(":")[5] == "3"
    assert replacement.split(":")[:5] == damaged.split(":")[:5]  # the same label content

    assert bedside(clinician, replacement, bag)["match"] is True
    assert bedside(clinician, band["payloads"][1], bag)["match"] is True  # the other copy
    assert alert_kinds(world) == []
    refused = bedside(clinician, damaged, bag)
    assert refused["match"] is False and "patient_label_invalid" in codes(refused)
    assert alert_kinds(world) == ["label_voided"]
    stopped = scan(ward["ward_operator"], damaged)
    assert stopped["ok"] is False and "voided" in codes(stopped)
    assert alert_kinds(world) == ["label_voided"]  # one alert per voided payload

    # both the void and the new print are recorded and audited, linked to each other
    records = {
        r["label_id"]: r
        for r in clinician.get(f"/api/v1/items/{ward['wristband']}/labels").get_json()
    }
    assert records[damaged_id]["voided"] and records[damaged_id]["replaced_by"] == new_id
    assert records[damaged_id]["void_reason"] == "replaced: wristband wet, unreadable"
    assert records[new_id]["replaces"] == damaged_id and records[new_id]["reprint"] is True
    assert records[new_id]["reason"] == f"replaces {damaged_id}: wristband wet, unreadable"
    void_events = audit_events(world.db, entity_type="label_void", entity_id=damaged_id)
    print_events = audit_events(world.db, entity_type="label", entity_id=new_id)
    assert len(void_events) == 1 and len(print_events) == 1
    assert void_events[0]["username"] == print_events[0]["username"] == "doc"

    # a copy is replaced once; a voided copy cannot be replaced again
    assert_problem(clinician.post(url, json={"reason": "again"}), 409, "already_voided")
    assert_problem(clinician.post(url, json={"format": "pdf"}), 422, "validation_error")
    assert_problem(
        clinician.post(
            f"/api/v1/items/{ward['wristband']}/labels/LBL-AAAAAAAAAA/replace",
            json={"reason": "x"},
        ),
        404,
    )


@pytest.mark.requirement("SPEC §6")
def test_a_voided_copy_cannot_be_administered_and_alerts_qa(ward) -> None:
    from tests.conftest import sig

    clinician = ward["clinician"]
    band = print_zpl(clinician, ward["wristband"])["payloads"][0]
    bag = print_zpl(ward["ward_operator"], ward["bag"], copies=2)
    void = ward["ward_operator"].post(
        f"/api/v1/items/{ward['bag']}/labels/{bag['label_ids'][0]}/void",
        json={"reason": "label applied to the wrong bag"},
    )
    assert void.status_code == 200
    refused = clinician.post("/api/v1/administrations", json={
        "patient_payload": band, "product_payload": bag["payloads"][0],
        "signature": sig("administered"),
    })
    body = assert_problem(refused, 409, "bedside_mismatch")
    assert "product_label_invalid" in codes(body)
    assert alert_kinds(ward["world"]) == ["label_voided"]
    given = clinician.post("/api/v1/administrations", json={
        "patient_payload": band, "product_payload": bag["payloads"][1],
        "signature": sig("administered"),
    })
    assert given.status_code == 201, given.get_json()


def test_replace_is_one_transaction(ward, monkeypatch) -> None:
    """If the replacement cannot be printed, the copy is not voided either."""
    world = ward["world"]
    band = print_zpl(ward["clinician"], ward["wristband"])
    voids_before = count(world.db, "label_void")

    def no_key() -> None:
        raise services.SigningKeyUnavailable("signing key file unreadable")

    monkeypatch.setattr(services.signing, "keyring", no_key)
    response = ward["clinician"].post(
        f"/api/v1/items/{ward['wristband']}/labels/{band['label_ids'][0]}/replace",
        json={"reason": "torn", "format": "pdf"},
    )
    assert_problem(response, 503, "signing_key_unavailable")
    assert count(world.db, "label_void") == voids_before
    monkeypatch.undo()
    assert bedside(ward["clinician"], band["payloads"][0], print_zpl(
        ward["ward_operator"], ward["bag"])["payloads"][0])["match"] is True


def test_concurrent_replacements_of_one_copy_print_one_replacement(ward) -> None:
    """Two workstations replace the same damaged copy at once: one replacement, one
    already_voided, never two valid replacements of one copy."""
    from gmp_mes.errors import Conflict
    from gmp_mes.models import User

    world = ward["world"]
    printed = print_zpl(ward["clinician"], ward["wristband"])
    prints_before = count(world.db, "label_print")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def work(n: int) -> None:
        barrier.wait()
        try:
            with world.app.app_context(), world.tx() as s:
                user = s.get(User, world.clinician.user_id)
                services.replace_label(
                    s, ward["wristband"], printed["label_ids"][0], reason=f"torn {n}",
                    request=services.PrintRequest("zpl"), user=user,
                )
            outcomes.append("replaced")
        except Conflict as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["already_voided", "replaced"]
    assert count(world.db, "label_void") == 1
    assert count(world.db, "label_print") == prints_before + 1


@pytest.mark.requirement("SPEC §7")
def test_voids_and_replacements_only_at_the_items_site_or_by_qa(ward, login, make_user) -> None:
    world = ward["world"]
    printed = print_zpl(ward["ward_operator"], ward["bag"], copies=3)
    first, second, third = printed["label_ids"]
    base = f"/api/v1/items/{ward['bag']}/labels"
    other_clinician = login(make_user("doc2", "clinician", site=OTHER_TREATMENT))

    # an operator of the plant and a clinician of another hospital: 403 wrong_site
    refusals = [
        ward["plant_operator"].post(f"{base}/{first}/void", json={"reason": "x"}),
        ward["plant_operator"].post(f"{base}/{first}/replace", json={"reason": "x"}),
        other_clinician.post(f"{base}/{first}/replace", json={"reason": "x"}),
    ]
    for response in refusals:
        body = assert_problem(response, 403, "wrong_site")
        assert TREATMENT in body["detail"]
    # a clinician never voids alone (role), but replaces at the bag's site
    assert_problem(ward["clinician"].post(f"{base}/{first}/void", json={"reason": "x"}), 403,
                   "forbidden_role")
    assert count(world.db, "label_void") == 0
    assert count(world.db, "label_print") == 3

    assert ward["ward_operator"].post(f"{base}/{first}/void", json={"reason": "torn"}).status_code \
        == 200
    assert ward["clinician"].post(
        f"{base}/{second}/replace", json={"reason": "smudged", "format": "zpl"}
    ).status_code == 200
    assert ward["qa"].post(f"{base}/{third}/replace", json={"reason": "lost"}).status_code == 200
    assert count(world.db, "label_void") == 3
    valid = [r for r in ward["qa"].get(f"{base}").get_json() if not r["voided"]]
    assert [r["serial"] for r in valid] == ["4", "5"]


@pytest.mark.requirement("SPEC §4")
def test_six_field_labels_from_before_still_verify_offline_and_online(ward, runner) -> None:
    """A label printed before serials: its print row has no serial and its payload the
    6-field form. It keeps verifying (CLI offline, scan and bedside online) until voided."""
    from gmp_mes.models import User
    from labels.models import LabelPrint

    world, clinician = ward["world"], ward["clinician"]
    old: dict[str, str] = {}
    with world.app.app_context(), world.db.transaction(actor=Actor.system("test")) as s:
        printer = s.query(User).filter_by(username="doc").one()
        for item_id in (ward["wristband"], ward["bag"]):
            legacy = services.payload_for_item(s, item_id)
            assert len(legacy.split(":")) == 6
            old[item_id] = legacy
            s.add(LabelPrint(
                label_id=services.new_label_id(), item_id=item_id,
                kind_code=legacy.split(":")[1], coi_id=legacy.split(":")[3],
                payload_digest=services.payload_digest(legacy), key_id="0" * 16,
                format="zpl", copies=2, reprint=False, printed_by=printer.id,
                printed_at=utcnow() - timedelta(days=1),
            ))
    band, bag = old[ward["wristband"]], old[ward["bag"]]

    result = runner.invoke(args=["labels", "verify", band])
    assert result.exit_code == 0, result.output
    assert "valid label" in result.output and "6-field" in result.output
    assert scan(ward["ward_operator"], bag)["ok"] is True
    assert bedside(clinician, band, bag)["match"] is True
    listed = clinician.get(f"/api/v1/items/{ward['bag']}").get_json()["labels"]
    assert [(x["serial"], x["copies"], x["voided"]) for x in listed] == [(None, 2, False)]

    # new copies printed now carry serials; both generations verify side by side
    new = print_zpl(clinician, ward["wristband"], reprint=True)
    assert new["payloads"][0].split(":")[5] == "1"
    result = runner.invoke(args=["labels", "verify", new["payloads"][0]])
    assert result.exit_code == 0 and "copy:    1" in result.output
    assert bedside(clinician, new["payloads"][0], bag)["match"] is True
    assert bedside(clinician, band, bag)["match"] is True

    # voiding the old print voids its (identical, indistinguishable) copies only
    old_id = listed[0]["label_id"]
    voided = ward["qa"].post(f"/api/v1/items/{ward['bag']}/labels/{old_id}/void",
                             json={"reason": "old label faded"})
    assert voided.status_code == 200
    assert "voided" in codes(scan(ward["ward_operator"], bag))
    fresh = print_zpl(ward["ward_operator"], ward["bag"], reprint=True)["payloads"][0]
    assert scan(ward["ward_operator"], fresh)["ok"] is True
    assert bedside(clinician, band, fresh)["match"] is True
    # offline the old label still verifies: voids are known only online
    assert runner.invoke(args=["labels", "verify", bag]).exit_code == 0


def test_a_signed_copy_never_printed_is_refused(ward) -> None:
    """A payload with a serial no print recorded (key misuse, restored backup) fails."""
    from identity import services as identity

    with ward["world"].app.app_context(), ward["world"].db.transaction(
        actor=Actor.system("test")
    ) as s:
        data = identity.label_data(s, ward["bag"])
        unrecorded = services.sign(
            services.keyring().private_key, data["kind_code"], data["item_id"],
            data["coi_id"], data["expires_at"], 7,
        )
    body = scan(ward["ward_operator"], unrecorded)
    assert body["ok"] is False and codes(body) == {"unknown_copy"}


@pytest.mark.requirement("SPEC §4")
def test_new_format_labels_decode_from_real_qr_codes(ward) -> None:
    """zxing-cpp reads the new per-copy payload off PNG and a two-page PDF."""
    api = ward["ward_operator"]
    png = api.get(f"/api/v1/items/{ward['bag']}/label?format=png")
    assert png.status_code == 200
    (first,) = decode_png(png.data)
    assert COPY_PAYLOAD.fullmatch(first) and first.split(":")[5] == "1"
    pdf = api.get(f"/api/v1/items/{ward['bag']}/label?format=pdf&copies=2&reprint=1&reason=spares")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    found = decode_pdf(pdf.data)
    assert [p.split(":")[5] for p in found] == ["2", "3"]
    assert all(COPY_PAYLOAD.fullmatch(p) for p in found)
    with ward["world"].db.transaction(actor=Actor.system("test")) as s:
        assert all(services.check_payload(s, p).ok for p in [first, *found])


def test_openapi_documents_the_copy_routes(anonymous) -> None:
    spec = anonymous.get("/api/v1/openapi.json").get_json()
    replace = spec["paths"]["/api/v1/items/{item_id}/labels/{label_id}/replace"]["post"]
    void = spec["paths"]["/api/v1/items/{item_id}/labels/{label_id}/void"]["post"]
    assert {"200", "403", "409", "422"} <= set(replace["responses"])
    assert {"200", "403", "409"} <= set(void["responses"])
    body = replace["requestBody"]["content"]["application/json"]["schema"]
    schema = (
        spec["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]] if "$ref" in body else body
    )
    assert {"reason", "format"} <= set(schema["properties"])
    label = spec["components"]["schemas"]["Label"]["properties"]
    assert {"label_id", "serial", "format", "printed_at", "voided"} <= set(label)


# --- pages -------------------------------------------------------------------------------


def page_login(client, person) -> str:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    response = client.post(
        "/login",
        data={"username": person.username, "password": person.password,
              "csrf_token": token.group(1) if token else ""},
    )
    assert response.status_code == 302
    with client.session_transaction() as session:
        return session["csrf"]


def test_item_page_replaces_and_voids_a_copy(ward, client, make_user) -> None:
    person = make_user("wardqa", "operator", "qa", site=TREATMENT)
    printed = print_zpl(ward["ward_operator"], ward["bag"], copies=2)
    token = page_login(client, person)
    page = client.get(f"/items/{ward['bag']}").get_data(as_text=True)
    assert "Replace label" in page and "copy 2" in page
    assert f'action="/items/{ward["bag"]}/labels/replace"' in page

    forged = client.post(f"/items/{ward['bag']}/labels/replace",
                         data={"label_id": printed["label_ids"][0], "reason": "torn"})
    assert forged.status_code == 403  # no CSRF token
    missing = client.post(f"/items/{ward['bag']}/labels/replace",
                          data={"csrf_token": token, "label_id": printed["label_ids"][0]})
    assert missing.status_code == 302
    with client.session_transaction() as session:
        assert "reason" in str(session.get("_flashes"))
    replaced = client.post(
        f"/items/{ward['bag']}/labels/replace",
        data={"csrf_token": token, "label_id": printed["label_ids"][0], "reason": "torn",
              "format": "pdf"},
    )
    assert replaced.status_code == 200 and replaced.mimetype == "application/pdf"
    (replacement,) = decode_pdf(replaced.data)
    assert replacement.split(":")[5] == "3"
    voided = client.post(
        f"/items/{ward['bag']}/labels/void",
        data={"csrf_token": token, "label_id": printed["label_ids"][1], "reason": "spare lost"},
    )
    assert voided.status_code == 302
    with ward["world"].db.transaction(actor=Actor.system("test")) as s:
        states = [(r.serial, r.voided) for r in services.labels_of_item(s, ward["bag"])]
        assert services.check_payload(s, replacement).ok
    assert states == [("1", True), ("2", True), ("3", False)]


def test_item_page_replace_refused_elsewhere(ward, client) -> None:
    printed = print_zpl(ward["ward_operator"], ward["bag"])
    token = page_login(client, ward["world"].operator)  # the plant's operator
    refused = client.post(
        f"/items/{ward['bag']}/labels/{printed['label_ids'][0]}/replace",
        data={"csrf_token": token, "reason": "torn", "format": "pdf"},
    )
    assert refused.status_code == 302
    with client.session_transaction() as session:
        assert "current site" in str(session.get("_flashes"))
    assert count(ward["world"].db, "label_void") == 0


def test_bedside_page_replaces_a_damaged_wristband(ward, client) -> None:
    band = print_zpl(ward["clinician"], ward["wristband"])
    token = page_login(client, ward["world"].clinician)
    bedside_page = client.get("/bedside").get_data(as_text=True)
    assert "Replace wristband label" in bedside_page
    coi = ward["patient"]["coi_id"]
    found = client.get(f"/bedside/wristband-label?wristband={coi.lower()}")
    assert found.status_code == 200
    html = found.get_data(as_text=True)
    assert band["label_ids"][0] in html and "Replace label" in html
    assert client.get("/bedside/wristband-label?wristband=NOPE").status_code == 404
    # the bag is not a wristband
    assert client.get(f"/bedside/wristband-label?wristband={ward['bag']}").status_code == 404

    replaced = client.post(
        f"/items/{ward['wristband']}/labels/replace",
        data={"csrf_token": token, "label_id": band["label_ids"][0], "reason": "wet",
              "format": "pdf", "back": "bedside"},
    )
    assert replaced.status_code == 200 and replaced.mimetype == "application/pdf"
    (new_band,) = decode_pdf(replaced.data)
    bag = print_zpl(ward["ward_operator"], ward["bag"])["payloads"][0]
    assert bedside(ward["clinician"], new_band, bag)["match"] is True
    again = client.post(
        f"/items/{ward['wristband']}/labels/replace",
        data={"csrf_token": token, "label_id": band["label_ids"][0], "reason": "wet",
              "back": "bedside"},
    )
    assert again.status_code == 302 and "/bedside/wristband-label" in again.headers["Location"]


# --- migration ---------------------------------------------------------------------------


def _migrate(db, to: str) -> None:
    from alembic import command

    from gmp_mes.migrate import alembic_config

    config = alembic_config()
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        if to == "heads":
            command.upgrade(config, "heads")
        else:
            command.downgrade(config, to)


@pytest.mark.requirement("EU GMP Annex 11 §9")
def test_labels_0002_keeps_labels_printed_before_valid(ward) -> None:
    """A database at labels_0001 with a label printed the old way upgrades to labels_0002:
    the old print row keeps its payload valid, and the table stays append-only."""
    from gmp_mes.migrate import current_heads

    world = ward["world"]
    db = world.db
    with world.app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        legacy = services.payload_for_item(s, ward["bag"])
    _migrate(db, "labels_0001")
    assert "labels_0001" in current_heads(db.engine)
    with db.engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO label_print (label_id, item_id, kind_code, coi_id, payload_digest,"
                " key_id, format, copies, reprint, printed_by, printed_at) VALUES"
                " ('LBL-OLDOLDOLD1', :item, 'FP', :coi, :digest, :key, 'zpl', 2, :no, :user, :at)"
            ),
            {
                "item": ward["bag"], "coi": ward["patient"]["coi_id"],
                "digest": services.payload_digest(legacy), "key": "0" * 16, "no": False,
                "user": world.operator.user_id,
                "at": utcnow().replace(tzinfo=None) if db.dialect == "sqlite" else utcnow(),
            },
        )
    _migrate(db, "heads")
    labels_heads = {h for h in current_heads(db.engine) if h.startswith("labels_")}
    assert labels_heads and labels_heads != {"labels_0001"}  # the labels branch moved on
    with world.app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        assert services.check_payload(s, legacy).ok
        (record,) = services.labels_of_item(s, ward["bag"])
    assert record.label_id == "LBL-OLDOLDOLD1" and record.serial is None and record.copies == 2
    # the append-only guards of labels_0001 survived the new columns
    for statement in ("UPDATE label_print SET serial = 1", "DELETE FROM label_print"):
        with pytest.raises(DBAPIError, match="refused"), db.engine.begin() as c:
            c.execute(text(statement))
    # a new copy gets serial 1 beside the old print; the old one is not superseded
    new = print_zpl(ward["ward_operator"], ward["bag"], reprint=True)["payloads"][0]
    with db.transaction(actor=Actor.system("test")) as s:
        assert services.check_payload(s, new).ok and services.check_payload(s, legacy).ok


@pytest.mark.requirement("SPEC §7")
def test_a_retried_replacement_returns_the_same_label_file_and_prints_once(ward) -> None:
    """A bedside device that lost the answer of a replacement sends it again with the same
    Idempotency-Key: it gets the same label file back (binary), nothing is printed twice."""
    world, clinician = ward["world"], ward["clinician"]
    band = print_zpl(clinician, ward["wristband"], copies=2)
    url = f"/api/v1/items/{ward['wristband']}/labels/{band['label_ids'][0]}/replace"
    body = {"reason": "wristband wet, unreadable", "format": "pdf"}
    headers = {"Idempotency-Key": "bedside-7-replace-1"}
    first = clinician.post(url, json=body, headers=headers)
    assert first.status_code == 200 and first.mimetype == "application/pdf"
    prints = count(world.db, "label_print")
    again = clinician.post(url, json=body, headers=headers)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.mimetype == "application/pdf" and again.data == first.data
    assert count(world.db, "label_print") == prints
    (payload,) = decode_pdf(again.data)
    assert COPY_PAYLOAD.fullmatch(payload) and payload.split(":")[5] == "3"
