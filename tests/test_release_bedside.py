"""SPEC §6 and §5 at the bedside (issue 13): a MATCH on a conditionally released product
carries the `conditional_release` warning naming the pending tests, in the API answer,
on the /bedside page and on the administration record; the final release ends it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import sig
from tests.test_pages_core import csrf_from, page_login
from tests.test_qc_fixtures import (  # noqa: F401 - fixtures
    Lab,
    lab_fixture,
    plant_fixture,
)

HOSPITAL = "HOSP1"


def _deliver(lab: Lab, bag: str) -> None:
    """Ship from the cleanroom by its operator, receive at the hospital by its clinician."""
    from gmp_mes.models import User
    from identity import services as identity

    plant = lab.plant
    with plant.tx(plant.operator) as s:
        identity.record_custody(s, bag, action="ship", site=HOSPITAL,
                                user=s.get(User, plant.operator.user_id))
    with plant.tx(plant.clinician) as s:
        identity.record_custody(s, bag, action="receive", site=HOSPITAL,
                                user=s.get(User, plant.clinician.user_id), location="LN2-1")


def _payloads(lab: Lab, number: str, bag: str) -> tuple[str, str]:
    from batches import services as batches
    from identity import services as identity
    from labels import services as labels

    with lab.tx() as s:
        patient = identity.get_patient(s, batches.batch_coi(s, number))
        return (labels.payload_for_item(s, patient.wristband_item_id),
                labels.payload_for_item(s, bag))


def _verify(api: Any, wristband: str, bag: str) -> dict[str, Any]:
    response = api.post("/api/v1/bedside/verify",
                        json={"patient_payload": wristband, "product_payload": bag})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.fixture
def conditional(lab: Lab) -> tuple[str, list[str]]:
    number = lab.ready(skip=("sterility",), bags=3)
    lab.release(number, conditional=True, justification="rapid progression")
    bags = sorted(lab.items(number))
    for bag in bags:
        _deliver(lab, bag)
    return number, bags


@pytest.mark.requirement("SPEC §6")
def test_match_on_a_conditional_release_carries_the_warning(
    lab: Lab, login, conditional: tuple[str, list[str]]
) -> None:
    number, (first, second, third) = conditional
    api = login(lab.plant.clinician)
    wristband, bag = _payloads(lab, number, first)
    body = _verify(api, wristband, bag)
    assert body["match"] is True and body["reasons"] == []
    (warning,) = body["warnings"]
    assert warning["code"] == "conditional_release"
    assert "sterility" in warning["message"] and "pending" in warning["message"]
    # The verdict record keeps the warning shown.
    from identity import services as identity

    with lab.tx() as s:
        (verdict,) = identity.verifications_of(s, first)
        assert json.loads(verdict.warnings) == body["warnings"]
    # The administration record stores it too, and answers with it.
    response = api.post("/api/v1/administrations", json={
        "patient_payload": wristband, "product_payload": bag, "signature": sig("administered")})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["warnings"] == body["warnings"]
    with lab.tx() as s:
        administration = identity.administration_of(s, first)
        assert administration.warning_list == body["warnings"]
    # The pending result passed: still conditional until QA's final release.
    lab.result(number, "sterility")
    _, bag2 = _payloads(lab, number, second)
    (warning,) = _verify(api, wristband, bag2)["warnings"]
    assert warning["code"] == "conditional_release"
    assert "final release" in warning["message"]
    lab.release(number, lab.qa2)
    _, bag3 = _payloads(lab, number, third)
    final = _verify(api, wristband, bag3)
    assert final["match"] is True and final["warnings"] == []


def test_a_mismatch_carries_no_warning(lab: Lab, login,
                                       conditional: tuple[str, list[str]]) -> None:
    number, (first, *_) = conditional
    wristband, bag = _payloads(lab, number, first)
    other = login(lab.plant.clinician)
    body = _verify(other, wristband, bag[:-1] + ("A" if bag[-1] != "A" else "B"))
    assert body["match"] is False and body["warnings"] == []


@pytest.mark.requirement("SPEC §6")
def test_bedside_page_shows_the_conditional_release_warning(
    lab: Lab, client, conditional: tuple[str, list[str]]
) -> None:
    number, (first, *_) = conditional
    wristband, bag = _payloads(lab, number, first)
    page_login(client, lab.plant.clinician)
    html = client.get("/bedside").get_data(as_text=True)
    posted = client.post("/bedside", data={"csrf_token": csrf_from(html),
                                           "patient_payload": wristband, "product_payload": bag})
    assert posted.status_code == 302  # post/redirect/get
    page = client.get(posted.headers["Location"], headers={"Accept": "text/html"})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "MATCH" in text and "DO NOT INFUSE" not in text
    warning = text[text.index('class="warning-box id-warning"'):]
    warning = warning[:warning.index("</p>")]
    assert "conditional_release" in warning and "sterility" in warning
    done = client.post("/bedside/administer", data={
        "csrf_token": csrf_from(text), "patient_payload": wristband, "product_payload": bag,
        "meaning": "administered", "password": lab.plant.clinician.password})
    assert done.status_code == 302  # post/redirect/get (issue 15)
    shown = client.get(done.headers["Location"], headers={"Accept": "text/html"})
    confirmation = shown.get_data(as_text=True)
    assert shown.status_code == 200 and "ADMINISTERED" in confirmation
    assert "conditional_release" in confirmation and "sterility" in confirmation


def test_label_of_a_delivered_bag_keeps_the_conditional_state_until_final(
    lab: Lab, login, conditional: tuple[str, list[str]]
) -> None:
    number, (first, *_) = conditional
    api = login(lab.plant.clinician)

    printed: list[str] = []

    def label() -> str:
        again = "&reprint=true&reason=smudged" if printed else ""
        response = api.get(f"/api/v1/items/{first}/label?format=zpl{again}")
        printed.append(first)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_data(as_text=True)

    assert lab.items(number)[first] == "received"
    assert "CONDITIONAL RELEASE" in label()
    lab.result(number, "sterility")
    assert "CONDITIONAL RELEASE" in label()  # still, until QA signs
    lab.release(number, lab.qa2)
    assert "CONDITIONAL RELEASE" not in label()


def test_item_page_shows_the_conditional_release_until_final(
    lab: Lab, client, conditional: tuple[str, list[str]]
) -> None:
    number, (first, *_) = conditional
    page_login(client, lab.plant.clinician)
    html = client.get(f"/items/{first}").get_data(as_text=True)
    assert "conditional_release" in html and "sterility" in html
    lab.result(number, "sterility")
    lab.release(number, lab.qa2)
    assert "conditional_release" not in client.get(f"/items/{first}").get_data(as_text=True)
