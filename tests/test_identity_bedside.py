"""Bedside verification and administration (SPEC §6)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from gmp_mes.clock import clock, utcnow
from tests.conftest import sig
from tests.helpers import assert_problem, count
from tests.test_identity_fixtures import PLANT, TREATMENT, World, world_fixture  # noqa: F401


def _tamper_signature(payload: str) -> str:
    last = payload[-1]
    return payload[:-1] + ("A" if last != "A" else "B")


def _bag(world: World, coi_id: str, *, status: str = "released", site: str = TREATMENT,
         **kw) -> str:
    kw.setdefault("expires_at", utcnow() + timedelta(days=30))
    return world.item(coi_id, status=status, site=site, **kw)


def _verify(api, wristband: str, bag: str):
    response = api.post("/api/v1/bedside/verify",
                        json={"patient_payload": wristband, "product_payload": bag})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _codes(body) -> list[str]:
    return sorted({r["code"] for r in body["reasons"]})


@pytest.fixture
def bedside(world: World, login):
    patient = world.enrol()
    return world, login(world.clinician), patient, world.payload(patient["wristband_item_id"])


@pytest.mark.requirement("SPEC §6")
def test_match_is_recorded(bedside) -> None:
    world, api, patient, wristband = bedside
    bag = _bag(world, patient["coi_id"])
    body = _verify(api, wristband + "\r\n", world.payload(bag).lower())
    assert body["match"] is True and body["reasons"] == [] and body["item_id"] == bag
    assert count(world.db, "bedside_verification") == 1


@pytest.mark.requirement("SPEC §6")
@pytest.mark.parametrize("reason", [
    "patient_label_invalid", "product_label_invalid", "coi_mismatch", "not_final_product",
    "status_not_infusible", "expired", "blocked", "post_thaw_window_exceeded",
    "already_administered", "wrong_site",
])
def test_each_mismatch_reason_alone(bedside, reason: str, login) -> None:
    world, api, patient, wristband = bedside
    coi_id = patient["coi_id"]
    bag_payload = None
    if reason == "patient_label_invalid":
        wristband = _tamper_signature(wristband)
        bag = _bag(world, coi_id)
    elif reason == "product_label_invalid":
        bag_payload = _tamper_signature(world.payload(_bag(world, coi_id)))
    elif reason == "coi_mismatch":
        other = world.enrol()
        bag = _bag(world, other["coi_id"])
    elif reason == "not_final_product":
        bag = world.item(coi_id, kind="starting_material", status="available", site=TREATMENT)
    elif reason == "status_not_infusible":
        bag = _bag(world, coi_id, status="quarantine")
    elif reason == "expired":
        bag = _bag(world, coi_id, expires_at=utcnow() + timedelta(hours=1))
        bag_payload = world.payload(bag)
        clock.freeze(utcnow() + timedelta(hours=2))
    elif reason == "blocked":
        bag = _bag(world, coi_id)
        world.set_status(bag, "blocked")
    elif reason == "post_thaw_window_exceeded":
        bag = _bag(world, coi_id, post_thaw_window="PT3H", site=PLANT)
        bag_payload = world.payload(bag)
        # Shipped by the plant, received and thawed at the ward by its clinician.
        assert login(world.operator).post(f"/api/v1/items/{bag}/custody", json={
            "action": "ship", "site": TREATMENT}).status_code == 201
        for action in ("receive", "thaw"):
            assert api.post(f"/api/v1/items/{bag}/custody",
                            json={"action": action, "site": TREATMENT}).status_code == 201
        clock.freeze(utcnow() + timedelta(hours=3, minutes=1))
    elif reason == "already_administered":
        bag = _bag(world, coi_id)
        world.set_status(bag, "administered")
    else:  # wrong_site
        bag = _bag(world, coi_id, site=PLANT)
    body = _verify(api, wristband, bag_payload or world.payload(bag))
    assert body["match"] is False
    assert _codes(body) == [reason], body["reasons"]
    assert all(r["message"] for r in body["reasons"])
    assert count(world.db, "bedside_verification") == 1


@pytest.mark.requirement("SPEC §6")
def test_several_reasons_at_once(bedside) -> None:
    world, api, _patient, wristband = bedside
    other = world.enrol()
    bag = _bag(world, other["coi_id"], site=PLANT, expires_at=utcnow() + timedelta(hours=1))
    world.set_status(bag, "blocked")
    payload = world.payload(bag)
    clock.freeze(utcnow() + timedelta(hours=2))
    body = _verify(api, wristband, payload)
    assert _codes(body) == ["blocked", "coi_mismatch", "expired", "wrong_site"]
    body = _verify(api, _tamper_signature(wristband), _tamper_signature(payload))
    assert {"patient_label_invalid", "product_label_invalid"} <= set(_codes(body))


def test_wristband_and_bag_swapped_or_garbage(bedside) -> None:
    world, api, patient, wristband = bedside
    bag = world.payload(_bag(world, patient["coi_id"]))
    body = _verify(api, bag, wristband)
    assert not body["match"] and "patient_label_invalid" in _codes(body)
    body = _verify(api, "garbage", "GMP1:")
    assert _codes(body) == ["patient_label_invalid", "product_label_invalid"]


def test_bedside_is_for_clinicians(bedside, login) -> None:
    world, _api, _patient, wristband = bedside
    assert_problem(login(world.operator).post("/api/v1/bedside/verify", json={
        "patient_payload": wristband, "product_payload": wristband}), 403)


# --- administration ----------------------------------------------------------------------

@pytest.mark.requirement("21 CFR 11.50")
def test_administration_signed_and_final(bedside) -> None:
    world, api, patient, wristband = bedside
    bag = _bag(world, patient["coi_id"])
    body = {"patient_payload": wristband, "product_payload": world.payload(bag),
            "signature": sig("administered")}
    response = api.post("/api/v1/administrations", json=body)
    assert response.status_code == 201, response.get_json()
    out = response.get_json()
    assert out["item_id"] == bag and out["signature"]["meaning"] == "administered"
    assert out["signature"]["printed_name"] == "Doc"
    item = api.get(f"/api/v1/items/{bag}").get_json()
    assert item["status"] == "administered" and item["custody"][-1]["action"] == "administer"
    again = assert_problem(api.post("/api/v1/administrations", json=body), 409,
                           "already_administered")
    assert [r["code"] for r in again["reasons"]] == ["already_administered"]
    # The refused attempt's verdict was recorded too (match, administration, refusal).
    assert count(world.db, "bedside_verification") == 2


def test_administration_refused_with_reasons(bedside) -> None:
    world, api, _patient, wristband = bedside
    other = world.enrol()
    bag = _bag(world, other["coi_id"])
    problem = assert_problem(api.post("/api/v1/administrations", json={
        "patient_payload": wristband, "product_payload": world.payload(bag),
        "signature": sig("administered")}), 409, "bedside_mismatch")
    assert [r["code"] for r in problem["reasons"]] == ["coi_mismatch"]
    assert count(world.db, "administration") == 0
    assert count(world.db, "bedside_verification") == 1


@pytest.mark.requirement("21 CFR 11.200(a)")
def test_administration_needs_password_and_meaning(bedside) -> None:
    world, api, patient, wristband = bedside
    bag = _bag(world, patient["coi_id"])
    body = {"patient_payload": wristband, "product_payload": world.payload(bag)}
    assert_problem(api.post("/api/v1/administrations",
                            json={**body, "signature": sig("administered", "wrong-pass")}),
                   401, "signature_rejected")
    assert_problem(api.post("/api/v1/administrations",
                            json={**body, "signature": sig("approved")}), 422)
    assert_problem(api.post("/api/v1/administrations", json=body), 422)
    assert count(world.db, "administration") == 0
    assert api.get(f"/api/v1/items/{bag}").get_json()["status"] == "released"


@pytest.mark.requirement("SPEC §6")
def test_concurrent_double_administration_yields_exactly_one(bedside, app, login) -> None:
    world, api, patient, wristband = bedside
    bag = _bag(world, patient["coi_id"])
    body = {"patient_payload": wristband, "product_payload": world.payload(bag),
            "signature": sig("administered")}
    token = api.token
    statuses: list[int] = []
    barrier = threading.Barrier(4)

    def administer() -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post("/api/v1/administrations", json=body,
                               headers={"Authorization": f"Bearer {token}"})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=administer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201, 409, 409, 409]
    assert count(world.db, "administration") == 1
