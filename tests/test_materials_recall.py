"""The recall (SPEC §11 where-used): lot → batches → bags → patients, administered first,
through intermediates; at the API, the CLI and in the batch record; and the lot expiry
warnings of the sweep, raised once."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from tests.conftest import sig
from tests.helpers import assert_problem
from tests.test_materials_fixtures import Store, store_fixture  # noqa: F401 - fixture

HOSPITAL = "HOSP1"


class Plant:
    """Patients with batches made of their cells: starting material → intermediate →
    final-product bags (identity's items), and the lots each batch used."""

    def __init__(self, store: Store, clinician: Any) -> None:
        self.store, self.clinician = store, clinician
        self.n = 0

    def patient(self) -> tuple[str, str]:
        from identity import services

        self.n += 1
        with self.store.tx(self.clinician) as s:
            p = services.enrol_patient(s, given_name="Ada", family_name=f"Byron{self.n}",
                                       date_of_birth=date(1971, 3, 4), mrn=f"R{self.n:04d}",
                                       treatment_site=HOSPITAL)
            return p.coi_id, p.wristband_item_id

    def batch(self, coi_id: str, number: str, bags: int) -> list[str]:
        from identity import services

        with self.store.tx() as s:
            start = services.create_item(s, kind="starting_material", coi_id=coi_id,
                                         site_code="CLEAN1", status="in_process",
                                         batch_number=number)
            middle = services.create_item(s, kind="intermediate", coi_id=coi_id,
                                          site_code="CLEAN1", status="in_process",
                                          parent_ids=[start.item_id], batch_number=number)
            return [services.create_item(
                s, kind="final_product", coi_id=coi_id, site_code=HOSPITAL,
                status="released", parent_ids=[middle.item_id], batch_number=number,
                expires_at=utcnow() + timedelta(days=30)).item_id for _ in range(bags)]

    def use(self, lot: str, material: str, number: str, coi_id: str,
            quantity: float = 1.0, step: str = "activation") -> None:
        answer = self.store.record(self.store.context(
            {material: None}, [(lot, quantity)], recording=True, batch_number=number,
            coi_id=coi_id, step_code=step))
        assert answer.reasons == [], answer.reasons

    def payload(self, item_id: str) -> str:
        from labels import services as labels

        with self.store.app.app_context(), self.store.db.transaction(
                actor=Actor.system("test")) as s:
            return labels.payload_for_item(s, item_id)


@pytest.fixture
def plant(store: Store, make_site: Any, make_user: Any) -> Plant:
    make_site(HOSPITAL, "treatment")
    return Plant(store, make_user("clio", "clinician", site=HOSPITAL))


@pytest.fixture
def recalled(plant: Plant, login: Any) -> dict[str, Any]:
    """Lot L (IL2) used by the batches of patients 1 and 2 (twice by 2), lot M by patient
    3's batch; patient 2's bag was given at the bedside."""
    store = plant.store
    store.material("IL2", unit="vial")
    lot, other = store.lot("IL2", 20), store.lot("IL2", 20)
    (p1, _), (p2, band2), (p3, _) = plant.patient(), plant.patient(), plant.patient()
    bags1 = plant.batch(p1, "CART-AUTO-0001", 2)
    bags2 = plant.batch(p2, "CART-AUTO-0002", 1)
    plant.batch(p3, "CART-AUTO-0003", 1)
    plant.use(lot, "IL2", "CART-AUTO-0001", p1)
    plant.use(lot, "IL2", "CART-AUTO-0002", p2, 1.5)
    plant.use(lot, "IL2", "CART-AUTO-0002", p2, 0.5, step="transduction")
    plant.use(other, "IL2", "CART-AUTO-0003", p3)
    plant.use(lot, "IL2", "CART-AUTO-0004", p3)  # a batch still in process: no bag yet
    given = login(plant.clinician).post("/api/v1/administrations", json={
        "patient_payload": plant.payload(band2), "product_payload": plant.payload(bags2[0]),
        "signature": sig("administered")})
    assert given.status_code == 201, given.get_json()
    return {"lot": lot, "other": other, "p1": p1, "p2": p2, "p3": p3, "bags1": bags1,
            "bags2": bags2}


@pytest.mark.requirement("Regulation (EC) 1394/2007 Art. 15")
@pytest.mark.requirement("EU GMP Part IV 14")
def test_where_used_finds_the_patients_administered_first(recalled: dict, login: Any,
                                                          store: Store) -> None:
    body = login(store.qa).get(f"/api/v1/lots/{recalled['lot']}/where-used").get_json()
    assert [b["batch_number"] for b in body["batches"]] == [
        "CART-AUTO-0002", "CART-AUTO-0001", "CART-AUTO-0004"]
    first = body["batches"][0]
    assert first["administered"] is True and first["quantity"] == "2" and first["uses"] == 2
    assert [(i["item_id"], i["administered"], i["status"]) for i in first["items"]] == [
        (recalled["bags2"][0], True, "administered")]
    assert first["items"][0]["administered_site"] == HOSPITAL
    second = body["batches"][1]
    assert sorted(i["item_id"] for i in second["items"]) == sorted(recalled["bags1"])
    assert all(not i["administered"] and i["coi_id"] == recalled["p1"]
               for i in second["items"])
    assert body["batches"][2]["items"] == []  # in process: the batch, no bag yet
    assert body["patients"] == [{"coi_id": recalled["p2"], "administered": True},
                                *sorted([{"coi_id": recalled["p1"], "administered": False},
                                         {"coi_id": recalled["p3"], "administered": False}],
                                        key=lambda p: p["coi_id"])]
    # Intermediates and starting material are not bags; patient 3's own batch used lot M.
    other = login(store.qa).get(f"/api/v1/lots/{recalled['other']}/where-used").get_json()
    assert [b["batch_number"] for b in other["batches"]] == ["CART-AUTO-0003"]
    assert_problem(login(store.qa).get("/api/v1/lots/LOT-999999/where-used"), 404)


def test_where_used_is_one_statement(recalled: dict, store: Store) -> None:
    from sqlalchemy import event

    from materials import services

    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    with store.tx() as s:
        lot = services.get_lot(s, recalled["lot"])
        event.listen(store.db.engine, "before_cursor_execute", seen)
        try:
            rows = s.execute(services.where_used_statement(), {"lot_id": lot.lot_id}).all()
        finally:
            event.remove(store.db.engine, "before_cursor_execute", seen)
    assert len(statements) == 1 and len(rows) == 4  # 1 + 2 bags + the bagless batch


def test_the_cli_prints_the_recall(recalled: dict, runner: Any) -> None:
    result = runner.invoke(args=["lots", "where-used", recalled["lot"]])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"lot {recalled['lot']}  IL2")
    assert lines[1].split()[:3] == ["BATCH", "COI", "USED"]
    assert lines[2].split()[0] == "CART-AUTO-0002" and recalled["bags2"][0] in lines[2]
    assert "administered" in lines[2]
    assert lines[-1].startswith("3 batch(es), 3 patient(s), 1 administered: " + recalled["p2"])
    unknown = runner.invoke(args=["lots", "where-used", "LOT-424242"])
    assert unknown.exit_code == 1
    assert unknown.output.strip().splitlines() == ["Error: no material lot 'LOT-424242'"]


@pytest.mark.requirement("EU GMP Part IV 6")
def test_the_batch_record_lists_the_lots_used(recalled: dict, store: Store) -> None:
    from materials import services

    with store.tx() as s:
        (section,) = services.batch_record_sections(s, "CART-AUTO-0002")
    assert section.key == "materials"
    assert [(d["lot_id"], d["step_code"], d["quantity"], d["supplier_lot"])
            for d in section.data] == [(recalled["lot"], "activation", "1.5", "SL-1"),
                                       (recalled["lot"], "transduction", "0.5", "SL-1")]
    assert section.table is not None and section.table.title == "Material lots used"
    assert len(section.table.rows) == 2
    assert all(len(row) == len(section.table.columns) for row in section.table.rows)
    with store.tx() as s:
        (empty,) = services.batch_record_sections(s, "CART-AUTO-9999")
    assert empty.data == [] and empty.table is not None and empty.table.rows == ()


@pytest.mark.requirement("EU GMP Part IV 7")
def test_the_sweep_warns_before_a_lot_with_stock_expires_once(store: Store,
                                                               runner: Any) -> None:
    from gmp_mes.alerts import list_alerts
    from materials import services, sweep

    store.material("IL2", unit="vial")
    in_20 = store.lot("IL2", 5, expires_in=timedelta(days=20))
    in_5 = store.lot("IL2", 5, expires_in=timedelta(days=5), release=False)
    store.lot("IL2", 5, expires_in=timedelta(days=60))  # too far
    rejected = store.lot("IL2", 5, expires_in=timedelta(days=5), release=False)
    used_up = store.lot("IL2", 1, expires_in=timedelta(days=5))
    with store.tx(store.qa) as s:
        services.reject_lot(s, rejected, user_id=store.qa.user_id,
                            signature=_signed("rejected"), reason="damaged")
    store.record(store.context({"IL2": 1.0}, [(used_up, None)], recording=True))
    first = runner.invoke(args=["sweep"])
    assert first.exit_code == 0, first.output
    assert sorted(line for line in first.output.splitlines() if "lot expiry" in line) == [
        f"lot expiry warning: {in_20} P30D", f"lot expiry warning: {in_5} P30D",
        f"lot expiry warning: {in_5} P7D"]
    second = runner.invoke(args=["sweep"])
    assert "lot expiry" not in second.output
    with store.tx() as s:
        assert sweep.sweep(s) == []
        alerts = [a for a in list_alerts(s, kind=sweep.KIND)]
    assert sorted(a.cause for a in alerts) == sorted([
        f"lot_expiry:{in_20}:P30D", f"lot_expiry:{in_5}:P30D", f"lot_expiry:{in_5}:P7D"])
    assert all(a.role_list == ["qa", "operator"] and a.site_code == "CLEAN1"
               for a in alerts)


def _signed(meaning: str) -> Any:
    from tests.test_materials_fixtures import signed

    return signed(meaning)
