"""Equipment labels (kind EQP, SPEC §11): printed through the API with print control, the
PNG decoded with a real decoder (zxing-cpp), scanned at a step and at the scan station's
seam; previews record nothing and never verify."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
import zxingcpp
from PIL import Image

from equipment import services
from gmp_mes import registry
from gmp_mes.clock import clock
from labels import services as labels
from tests.conftest import sig
from tests.helpers import assert_problem, count
from tests.test_equipment_fixtures import Shop, codes, shop_fixture  # noqa: F401
from tests.test_pages_core import csrf_from, page_login

pytestmark = pytest.mark.requirement("SPEC §11")


def _decode(png: bytes) -> str:
    (code,) = [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]
    return code


@pytest.mark.requirement("21 CFR 211.182")
def test_print_decode_and_scan_an_equipment_label(shop: Shop, login, db) -> None:
    shop.register("INC-01", "incubator", interval="P365D", name="CO2 incubator 1")
    api = login(shop.operator)
    response = api.get("/api/v1/equipment/INC-01/label?format=png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.headers["X-Label-Id"]
    payload = _decode(response.data)
    assert payload.split(":")[:6] == ["GMP1", "EQP", "INC-01", "-", "-", "1"]
    # A second original is refused; a reprint needs a reason.
    assert_problem(api.get("/api/v1/equipment/INC-01/label?format=png"), 409, "already_printed")
    assert_problem(api.get("/api/v1/equipment/INC-01/label?format=png&reprnt=true"), 422)
    # Scanned at a step: the payload names the equipment (never calibrated: refused).
    assert codes(shop.check("B1", needs=("incubator",), given=(payload,))) == [
        "calibration_overdue"]
    clock.advance(timedelta(minutes=1))
    api.post("/api/v1/equipment/INC-01/events", json={"kind": "calibrated", "signature": sig()})
    result = shop.check("B1", needs=("incubator",), given=(payload + "\r\n",), apply_record=4)
    assert result.reasons == [] and result.signed[0]["equipment_id"] == "INC-01"
    # The scan station (POST /scans): the equipment and its status, from this domain.
    scanned = api.post("/api/v1/scans", json={"payload": payload, "workstation": "CR-2"})
    assert scanned.status_code == 200, scanned.get_json()
    answer = scanned.get_json()
    assert (answer["ok"], answer["status"], answer["item"], answer["reasons"]) == (
        True, "in_service", None, [])
    assert answer["subject"]["kind"] == "equipment" and answer["subject"]["id"] == "INC-01"
    assert answer["subject"]["url"] == "/equipment/INC-01" and answer["expires_at"]
    # The API lists the printed copy.
    (copy,) = api.get("/api/v1/equipment/INC-01").get_json()["labels"]
    assert copy["serial"] == 1 and copy["label_id"] == response.headers["X-Label-Id"]
    # The scan station's seam: what the verified label names, fit for use now.
    with shop.tx() as s:
        (found,) = [found for provide in registry.scanned_subjects.providers()
                    if (found := provide(s, "EQP", "INC-01")) is not None]
    assert found.ok and found.status == "in_service" and found.url == "/equipment/INC-01"
    assert found.expires_at is not None and "CO2 incubator 1" in found.title
    with shop.tx() as s:
        assert services.scanned_subject(s, "LOT", "LOT-000001") is None


def test_scanned_subject_reasons(shop: Shop, login) -> None:
    shop.register("INC-01", "incubator", interval="P30D")
    api = login(shop.operator)
    payload = _decode(api.get("/api/v1/equipment/INC-01/label?format=png").data)
    shop.event("INC-01", "out_of_service", reason="alarm")
    answer = api.post("/api/v1/scans", json={"payload": payload, "workstation": "CR-2"})
    assert answer.get_json()["ok"] is False
    assert [r["code"] for r in answer.get_json()["reasons"]] == [
        "equipment_out_of_service", "calibration_overdue"]
    with shop.tx() as s:
        found = services.scanned_subject(s, "EQP", "INC-01")
    assert found is not None and not found.ok and found.status == "out_of_service"
    assert [r["code"] for r in found.reasons] == ["equipment_out_of_service",
                                                  "calibration_overdue"]


def test_a_label_of_another_kind_is_no_equipment(shop: Shop) -> None:
    shop.register("CNT-01", "cell_counter")
    with shop.tx() as s:
        printed = labels.print_asset_label(s, labels.AssetLabel(
            kind_code="LOT", subject_id="LOT-000001", title="MATERIAL LOT", lines=("IL-2",),
            expires_at=None, site_code="CLEAN1", site_timezone="UTC"),
            labels.PrintRequest(format="png"), user_id=shop.operator.user_id)
        lot_payload = printed.payloads[0]
    result = shop.check("B1", needs=("cell_counter",), given=(lot_payload,))
    assert codes(result) == ["equipment_unknown", "equipment_missing"]


def test_preview_records_nothing_and_never_verifies(shop: Shop, login, db) -> None:
    shop.register("INC-01", "incubator")
    response = login(shop.admin).get("/api/v1/equipment/INC-01/label?format=png&preview=true")
    assert response.status_code == 200
    code = _decode(response.data)
    assert code.startswith("PREVIEW:")
    assert count(db, "asset_label_print") == 0
    result = shop.check("B1", needs=("incubator",), given=(code,))
    assert codes(result) == ["malformed", "equipment_missing"]
    assert "preview" in result.reasons[0]["message"]


def test_label_roles(shop: Shop, login) -> None:
    shop.register("INC-01", "incubator")
    assert_problem(login(shop.qa).get("/api/v1/equipment/INC-01/label?format=png"), 403)
    assert_problem(login(shop.admin).get("/api/v1/equipment/NOPE/label?format=png"), 404)


def test_label_print_and_preview_from_the_page(shop: Shop, client, db) -> None:
    shop.register("INC-01", "incubator")
    page_login(client, shop.operator)
    html = client.get("/equipment/INC-01").get_data(as_text=True)
    assert "Equipment label" in html and "No label printed yet" in html
    token = csrf_from(html)
    preview = client.get("/equipment/INC-01/label/preview?format=png")
    assert preview.status_code == 200 and preview.mimetype == "image/png"
    response = client.post("/equipment/INC-01/label/print",
                           data={"format": "pdf", "copies": "1", "csrf_token": token})
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert count(db, "asset_label_print") == 1
    # A second original from the page comes back with the reason, the choice kept.
    response = client.post("/equipment/INC-01/label/print",
                           data={"format": "zpl", "copies": "1", "csrf_token": token},
                           headers={"Accept": "text/html"})
    assert response.status_code == 409
    html = response.get_data(as_text=True)
    assert "label not printed" in html and '<option value="zpl" selected' in html
