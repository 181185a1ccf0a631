"""Material master and lots over the API (SPEC §11): receipt into quarantine, QA's signed
release (never by the receiver) and rejection, exact quantities, every write audited."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from gmp_mes.audit import verify_chain
from gmp_mes.clock import utcnow
from tests.conftest import sig
from tests.helpers import assert_problem, audit_events, count
from tests.test_materials_fixtures import Store, store_fixture  # noqa: F401 - fixture

EXPIRY = (utcnow() + timedelta(days=400)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _material(api: Any, code: str = "IL2", unit: str = "mL") -> dict[str, Any]:
    response = api.post("/api/v1/materials", json={
        "code": code, "name": "Interleukin-2 (Proleukin)", "kind": "reagent", "unit": unit,
        "storage": "2-8 °C"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _receive(api: Any, code: str = "IL2", quantity: Any = 10) -> dict[str, Any]:
    response = api.post(f"/api/v1/materials/{code}/lots", json={
        "supplier": "Clinigen", "supplier_lot": "P2611A", "expires_at": EXPIRY,
        "quantity": quantity, "coa_reference": "COA-2611"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


@pytest.mark.requirement("EU GMP Part IV 7")
def test_a_lot_is_received_into_quarantine(store: Store, login: Any) -> None:
    qa, op = login(store.qa), login(store.operator)
    assert _material(qa)["code"] == "IL2"
    lot = _receive(op, quantity="12.5")
    assert lot["lot_id"] == "LOT-000001" and lot["status"] == "quarantine"
    assert lot["remaining"] == "12.5" and lot["quantity"] == "12.5"
    assert lot["material"] == "IL2" and lot["site"] == "CLEAN1"
    assert _receive(op)["lot_id"] == "LOT-000002"
    detail = op.get("/api/v1/lots/LOT-000001").get_json()
    assert detail["received_by"] == store.operator.username and detail["uses"] == []
    assert detail["signature"] is None
    listed = op.get("/api/v1/materials").get_json()
    assert [m["code"] for m in listed] == ["IL2"]
    assert audit_events(store.db, entity_type="material_lot", entity_id="LOT-000001")
    assert audit_events(store.db, entity_type="material", entity_id="IL2")


def test_material_and_lot_input_is_checked(store: Store, login: Any) -> None:
    qa, op = login(store.qa), login(store.operator)
    assert_problem(op.post("/api/v1/materials", json={
        "code": "X", "name": "x", "kind": "reagent", "unit": "mL"}), 403, "forbidden_role")
    assert_problem(qa.post("/api/v1/materials", json={
        "code": "il 2", "name": "x", "kind": "reagent", "unit": "mL"}), 422)
    assert_problem(qa.post("/api/v1/materials", json={
        "code": "IL2", "name": "x", "kind": "potion", "unit": "mL"}), 422)
    _material(qa)
    assert_problem(qa.post("/api/v1/materials", json={
        "code": "IL2", "name": "x", "kind": "reagent", "unit": "mL"}), 409, "already_exists")
    base = {"supplier": "S", "supplier_lot": "L", "expires_at": EXPIRY, "quantity": 1}
    assert_problem(op.post("/api/v1/materials/NOPE/lots", json=base), 404)
    for bad in (0, -1, "abc", True, 0.0000001, 1e12):
        assert_problem(op.post("/api/v1/materials/IL2/lots", json={**base, "quantity": bad}),
                       422)
    past = (utcnow() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = assert_problem(op.post("/api/v1/materials/IL2/lots",
                                  json={**base, "expires_at": past}), 422)
    assert "expires_at" in body["errors"]
    assert_problem(op.post("/api/v1/materials/IL2/lots", json={**base, "unknown": 1}), 422)
    assert count(store.db, "material_lot") == 0


@pytest.mark.requirement("EU GMP Part IV 3")
def test_the_receiver_cannot_release_the_lot(store: Store, login: Any) -> None:
    qa, qa2 = login(store.qa), login(store.qa2)
    _material(qa)
    lot = _receive(qa)  # QA may receive too; then another QA person releases
    assert_problem(qa.post(f"/api/v1/lots/{lot['lot_id']}/release",
                           json={"signature": sig("released")}), 403, "segregation_of_duties")
    assert qa.get(f"/api/v1/lots/{lot['lot_id']}").get_json()["status"] == "quarantine"
    released = qa2.post(f"/api/v1/lots/{lot['lot_id']}/release",
                        json={"signature": sig("released")})
    assert released.status_code == 201, released.get_json()
    body = released.get_json()
    assert body["status"] == "released" and body["decided_by"] == store.qa2.username
    assert body["signature"]["meaning"] == "released"
    assert body["signature"]["username"] == store.qa2.username


@pytest.mark.requirement("21 CFR 11.70")
@pytest.mark.requirement("EU GMP Part IV 7")
def test_release_and_reject_are_signed_once(store: Store, login: Any) -> None:
    from gmp_mes.signatures import still_binds
    from materials import services

    qa, op = login(store.qa), login(store.operator)
    _material(qa)
    first, second = _receive(op)["lot_id"], _receive(op)["lot_id"]
    assert_problem(op.post(f"/api/v1/lots/{first}/release",
                           json={"signature": sig("released")}), 403, "forbidden_role")
    assert_problem(qa.post(f"/api/v1/lots/{first}/release",
                           json={"signature": sig("rejected")}), 422)
    assert_problem(qa.post(f"/api/v1/lots/{first}/release",
                           json={"signature": sig("released", "wrong-password")}),
                   401, "signature_rejected")
    assert qa.post(f"/api/v1/lots/{first}/release",
                   json={"signature": sig("released")}).status_code == 201
    assert_problem(qa.post(f"/api/v1/lots/{first}/release",
                           json={"signature": sig("released")}), 409, "invalid_transition")
    assert_problem(qa.post(f"/api/v1/lots/{first}/reject",
                           json={"signature": sig("rejected"), "reason": "late"}),
                   409, "invalid_transition")
    assert_problem(qa.post(f"/api/v1/lots/{second}/reject",
                           json={"signature": sig("rejected")}), 422)
    rejected = qa.post(f"/api/v1/lots/{second}/reject",
                       json={"signature": sig("rejected"), "reason": "CoA out of spec"})
    assert rejected.status_code == 201, rejected.get_json()
    assert rejected.get_json()["status"] == "rejected"
    assert rejected.get_json()["reject_reason"] == "CoA out of spec"
    assert_problem(qa.post(f"/api/v1/lots/{second}/release",
                           json={"signature": sig("released")}), 409, "invalid_transition")
    assert_problem(qa.get("/api/v1/lots/LOT-999999"), 404)
    with store.tx() as s:
        for lot_id, decision, reason in ((first, "released", None),
                                         (second, "rejected", "CoA out of spec")):
            lot = services.get_lot(s, lot_id)
            assert lot.decision_signature is not None
            assert still_binds(lot.decision_signature,
                               services.decision_content(lot, decision, reason))
    with store.db.engine.connect() as c:
        assert verify_chain(c).ok
    _trail_matches_rows(store)


def _trail_matches_rows(store: Store) -> None:
    """audit verify: every lot, material and use is what its events last recorded."""
    from gmp_mes import reconcile

    with store.tx() as s:
        assert [str(d) for d in reconcile.differences(s)] == []


@pytest.mark.requirement("Regulation (EC) 1394/2007 Art. 15")
def test_quantities_are_exact_decimals(store: Store) -> None:
    """0.1 mL taken ten times from 1 mL leaves exactly 0, and an eleventh is refused."""
    from tests.test_materials_fixtures import codes

    store.material("IL2", unit="mL")
    lot = store.lot("IL2", quantity=1)
    for _ in range(10):
        answer = store.record(store.context({"IL2": None}, [(lot, 0.1)], recording=True))
        assert answer.reasons == []
    assert store.remaining(lot) == 0
    refused = store.record(store.context({"IL2": None}, [(lot, 0.1)], recording=True))
    assert codes(refused) == ["lot_insufficient"]
    assert count(store.db, "lot_use") == 10
    _trail_matches_rows(store)  # Decimal('0.000000') in the row and in its events
