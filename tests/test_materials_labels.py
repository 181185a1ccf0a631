"""Lot labels (SPEC §11: payload kind LOT, COI field ``-``): printed under print control,
decoded with a real decoder, and the decoded text used at a step and at the scan station's
seam (``registry.scanned_subjects``)."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from gmp_mes import registry
from gmp_mes.clock import utcnow
from tests.helpers import assert_problem, count
from tests.test_materials_fixtures import Store, codes, store_fixture  # noqa: F401 - fixture


def _decode(png: bytes) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


@pytest.mark.requirement("Regulation (EC) 1394/2007 Art. 15")
def test_a_printed_lot_label_decodes_scans_and_records_a_step(store: Store,
                                                               login: Any) -> None:
    store.material("IL7", unit="vial")
    lot = store.lot("IL7", 3)
    op = login(store.operator)
    preview = op.get(f"/api/v1/lots/{lot}/label?format=png&preview=true")
    assert preview.status_code == 200 and preview.headers["X-Label-Id"] == ""
    assert count(store.db, "asset_label_print") == 0
    response = op.get(f"/api/v1/lots/{lot}/label?format=png")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.mimetype == "image/png" and response.headers["X-Label-Id"]
    (payload,) = _decode(response.data)
    assert payload.startswith(f"GMP1:LOT:{lot}:-:")
    assert_problem(op.get(f"/api/v1/lots/{lot}/label?format=png"), 409, "already_printed")
    copies = op.get(f"/api/v1/lots/{lot}").get_json()["labels"]
    assert [(c["label_id"], c["serial"], c["kind_code"], c["printed_by"]) for c in copies] == [
        (response.headers["X-Label-Id"], 1, "LOT", store.operator.username)]
    assert_problem(op.get(f"/api/v1/lots/{lot}/label?format=png&reprnt=true"), 422)
    assert_problem(login(store.qa).get("/api/v1/lots/LOT-999999/label?format=png"), 404)

    # The scan station's seam: what the scanned label names.
    from labels import services as labels

    with store.tx() as s:
        check = labels.check_payload(s, payload + "\r\n")
        assert check.ok, check.reasons
        assert check.payload is not None
        (subject,) = [found for provider in registry.scanned_subjects.providers()
                      if (found := provider(s, check.payload.kind_code,
                                            check.payload.subject_id)) is not None]
    assert subject.kind == "lot" and subject.subject_id == lot and subject.ok
    assert subject.status == "released" and subject.url == f"/lots/{lot}"
    assert "IL7" in subject.title

    # POST /scans: the scan station shows the lot, as materials answers it.
    scanned = op.post("/api/v1/scans", json={"payload": payload + "\r\n",
                                             "workstation": "STORE-1"})
    assert scanned.status_code == 200, scanned.get_json()
    shown = scanned.get_json()
    assert shown["ok"] is True and shown["item"] is None and shown["status"] == "released"
    assert shown["subject"]["kind"] == "lot" and shown["subject"]["id"] == lot
    assert shown["subject"]["url"] == f"/lots/{lot}" and "IL7" in shown["subject"]["title"]
    assert shown["expires_at"] is not None

    # The step takes the scanned text wherever a lot id is accepted.
    answer = store.record(store.context({"IL7": 1.0}, [(payload, None)], recording=True))
    assert answer.reasons == [] and answer.signed[0]["lot_id"] == lot
    assert store.remaining(lot) == 2

    # A rejected lot's label stops the scan with the reason.
    from materials import services

    rejected = store.lot("IL7", 1, release=False)
    with store.tx(store.qa) as s:
        services.reject_lot(s, rejected, user_id=store.qa.user_id,
                            signature=_signed("rejected"), reason="broken seal")
    label = op.get(f"/api/v1/lots/{rejected}/label?format=png")
    (text,) = _decode(label.data)
    stop = op.post("/api/v1/scans", json={"payload": text, "workstation": "STORE-1"})
    assert stop.get_json()["ok"] is False
    assert [r["code"] for r in stop.get_json()["reasons"]] == ["lot_rejected"]


def _signed(meaning: str) -> Any:
    from tests.test_materials_fixtures import signed

    return signed(meaning)


def test_a_scanned_lot_that_is_not_fit_says_why(store: Store) -> None:
    from materials import services

    store.material("IL7")
    quarantined = store.lot("IL7", 1, release=False, expires_in=timedelta(days=1))
    with store.tx() as s:
        subject = services.scanned_lot(s, "LOT", quarantined)
        assert services.scanned_lot(s, "EQP", "BSC-01") is None
        unknown = services.scanned_lot(s, "LOT", "LOT-999999")
    assert subject is not None and not subject.ok
    assert [r["code"] for r in subject.reasons] == ["lot_not_released"]
    assert subject.expires_at is not None and subject.expires_at > utcnow()
    assert unknown is None  # the scan station answers unknown_subject


def test_an_item_label_is_not_a_lot(store: Store, make_site: Any, make_user: Any) -> None:
    from identity import services as identity
    from labels import services as labels

    make_site("HOSP1", "treatment")
    doctor = make_user("dora", "clinician", site="HOSP1")
    store.material("IL7")
    store.lot("IL7", 1)
    with store.tx(doctor) as s:
        patient = identity.enrol_patient(s, given_name="A", family_name="B",
                                         date_of_birth=utcnow().date() - timedelta(days=9000),
                                         mrn="M1", treatment_site="HOSP1")
        band = labels.payload_for_item(s, patient.wristband_item_id)
    answer = store.check(store.context({"IL7": 1.0}, [(band, None)]))
    assert codes(answer) == ["lot_unknown", "material_missing"]
