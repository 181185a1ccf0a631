"""The step check of materials (SPEC §11, ``registry.step_requirements``): each refusal
reason alone and all together, consumption exact under 20 concurrent steps, remaining
never below zero."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmp_mes import registry
from gmp_mes.clock import utcnow
from tests.helpers import count
from tests.test_materials_fixtures import Store, codes, store_fixture  # noqa: F401 - fixture

NEEDS = {"IL7": 1.0, "TEXMACS": None}  # as CART-AUTO v3's activation declares (in part)


@pytest.fixture
def stocked(store: Store) -> dict[str, str]:
    store.material("IL7", unit="vial")
    store.material("TEXMACS", unit="mL", kind="medium")
    store.material("LV-CD19", unit="mL", kind="vector")
    return {"IL7": store.lot("IL7", 5), "TEXMACS": store.lot("TEXMACS", 500),
            "LV-CD19": store.lot("LV-CD19", 10)}


def test_the_provider_is_registered(app: Any) -> None:
    from materials import services

    assert services.check_step_materials in registry.step_requirements.providers()
    assert services.batch_record_sections in registry.batch_record_sections.providers()
    assert services.scanned_lot in registry.scanned_subjects.providers()


def test_a_step_without_materials_answers_at_once(store: Store) -> None:
    """It runs on every step: no material declared or given, no statement sent."""
    from sqlalchemy import event

    from materials import services

    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    with store.tx() as s:
        s.connection()  # BEGIN before listening: only the check's own statements count
        event.listen(store.db.engine, "before_cursor_execute", seen)
        try:
            answer = services.check_step_materials(s, store.context({}, []))
        finally:
            event.remove(store.db.engine, "before_cursor_execute", seen)
    assert answer.reasons == [] and answer.apply is None and answer.signed is None
    assert statements == []


@pytest.mark.requirement("EU GMP Part IV 7")
def test_released_lots_in_stock_are_used_and_signed(store: Store, stocked: dict) -> None:
    ctx = store.context(NEEDS, [(stocked["IL7"], None), (stocked["TEXMACS"], 40.5)],
                        recording=True)
    answer = store.record(ctx, step_record_id=77)
    assert answer.reasons == []
    assert answer.signed == [
        {"label": f"{stocked['IL7']} IL7 1 vial", "lot_id": stocked["IL7"], "material": "IL7",
         "supplier_lot": "SL-1",
         "expires_at": answer.signed[0]["expires_at"], "quantity": "1", "unit": "vial"},
        {"label": f"{stocked['TEXMACS']} TEXMACS 40.5 mL", "lot_id": stocked["TEXMACS"],
         "material": "TEXMACS", "supplier_lot": "SL-2",
         "expires_at": answer.signed[1]["expires_at"], "quantity": "40.5", "unit": "mL"},
    ]
    assert store.remaining(stocked["IL7"]) == 4
    assert store.remaining(stocked["TEXMACS"]) == Decimal("459.5")
    from materials import services

    with store.tx() as s:
        uses = services.lot_view(s, stocked["TEXMACS"]).uses
        assert [(u.use.batch_number, u.use.step_code, u.use.step_record_id, u.use.quantity,
                 u.username) for u in uses] == [
            ("CART-AUTO-0001", "activation", 77, Decimal("40.5"), store.operator.username)]


def _reason_alone(store: Store, stocked: dict, reason: str) -> Any:
    il7, tex, lv = stocked["IL7"], stocked["TEXMACS"], stocked["LV-CD19"]
    good = [(il7, None), (tex, 40.0)]
    if reason == "material_missing":
        return store.context(NEEDS, [(il7, None)])
    if reason == "lot_not_released":
        quarantined = store.lot("TEXMACS", 100, release=False)
        return store.context(NEEDS, [(il7, None), (quarantined, 40.0)])
    if reason == "lot_expired":
        short = store.lot("TEXMACS", 100, expires_in=timedelta(days=2))
        return store.context(NEEDS, [(il7, None), (short, 40.0)],
                             at=utcnow() + timedelta(days=3))
    if reason == "lot_wrong_material":
        return store.context(NEEDS, [*good, (lv, 1.0)])
    if reason == "lot_insufficient":
        return store.context(NEEDS, [(il7, 3.0), (il7, 3.0), (tex, 40.0)])  # 6 of 5: add up
    if reason == "lot_unknown":
        return store.context(NEEDS, [*good, ("LOT-999999", 1.0)])
    if reason == "quantity_missing":
        return store.context(NEEDS, [(il7, None), (tex, None)])
    if reason == "quantity_invalid":
        return store.context(NEEDS, [(il7, None), (tex, 0.0000001)])
    if reason == "malformed":
        return store.context(NEEDS, [*good, ("GMP1:LOT:NOT-A-LABEL", None)])
    raise AssertionError(reason)


@pytest.mark.requirement("EU GMP Part IV 9")
@pytest.mark.parametrize("reason", [
    "material_missing", "lot_not_released", "lot_expired", "lot_wrong_material",
    "lot_insufficient", "lot_unknown", "quantity_missing", "quantity_invalid", "malformed"])
def test_each_refusal_reason_alone(store: Store, stocked: dict, reason: str) -> None:
    before = {lot: store.remaining(lot) for lot in stocked.values()}
    for recording in (False, True):
        ctx = _reason_alone(store, stocked, reason)
        ctx = type(ctx)(**{**ctx.__dict__, "recording": recording})
        answer = store.record(ctx)
        assert codes(answer) == [reason], answer.reasons
        assert all(r["message"] for r in answer.reasons)
        assert answer.apply is None  # a refused step consumes nothing
    assert {lot: store.remaining(lot) for lot in stocked.values()} == before
    assert count(store.db, "lot_use") == 0


@pytest.mark.requirement("EU GMP Part IV 9")
def test_a_lot_of_another_site_alone(store: Store, make_site, make_user) -> None:
    make_site("CLEAN2", "manufacturing")
    store.material("IL2", unit="vial")
    elsewhere = make_user("olaf", "operator", site="CLEAN2")
    lot = store.lot("IL2", 5, received_by=elsewhere)
    answer = store.check(store.context({"IL2": 1.0}, [(lot, None)]))
    assert codes(answer) == ["lot_other_site"], answer.reasons
    assert "CLEAN2" in answer.reasons[0]["message"]


def test_every_reason_at_once(store: Store, stocked: dict) -> None:
    """Never only the first: a step with everything wrong names everything."""
    quarantined = store.lot("IL7", 1, release=False)
    expiring = store.lot("TEXMACS", 10, expires_in=timedelta(days=2))
    ctx = store.context(
        {"IL7": 1.0, "TEXMACS": None, "CS10": 5.0},
        [(quarantined, 2.0), (expiring, None), (stocked["LV-CD19"], 1.0),
         ("LOT-999999", 1.0), ("GMP1:garbage", None)],
        at=utcnow() + timedelta(days=3))
    answer = store.check(ctx)
    assert codes(answer) == sorted([
        "lot_not_released", "lot_insufficient", "lot_expired", "quantity_missing",
        "lot_wrong_material", "lot_unknown", "malformed", "material_missing"]), answer.reasons
    # CS10 has no lot: material_missing names it.
    assert any("CS10" in r["message"] for r in answer.reasons if r["code"] == "material_missing")


@pytest.mark.requirement("Regulation (EC) 1394/2007 Art. 15")
@pytest.mark.slow
def test_twenty_concurrent_steps_take_the_last_units_exactly(store: Store) -> None:
    """Twenty steps at once, each in its own session and transaction, on a lot with seven
    vials left: seven get one, thirteen are refused lot_insufficient, none goes below 0."""
    from materials import services

    store.material("IL2", unit="vial")
    lot = store.lot("IL2", 7)
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def step(n: int) -> None:
        try:
            ctx = store.context({"IL2": 1.0}, [(lot, None)], recording=True,
                                batch_number=f"CART-AUTO-{n:04d}")
            barrier.wait(timeout=60)
            with store.tx() as s:
                answer = services.check_step_materials(s, ctx)
                if answer.apply is not None:
                    answer.apply(s, 1000 + n)
            results.append(codes(answer))
        except BaseException as error:  # reported below, never swallowed
            errors.append(error)

    threads = [threading.Thread(target=step, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results).count([]) == 7
    assert sorted(results).count(["lot_insufficient"]) == 13
    assert store.remaining(lot) == 0
    assert count(store.db, "lot_use") == 7


@pytest.mark.requirement("Regulation (EC) 1394/2007 Art. 15")
def test_the_database_refuses_remaining_below_zero(store: Store) -> None:
    from sqlalchemy.exc import IntegrityError

    from materials import services

    store.material("IL2", unit="vial")
    lot = store.lot("IL2", 1)
    with pytest.raises(IntegrityError), store.tx() as s:
        services.get_lot(s, lot).remaining = Decimal("-1.000000")
        s.flush()
    with pytest.raises(IntegrityError), store.tx() as s:
        services.get_lot(s, lot).remaining = Decimal("2.000000")
        s.flush()
    assert store.remaining(lot) == 1


quantities = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("5"), places=3)


@pytest.mark.requirement("Regulation (EC) 1394/2007 Art. 15")
@settings(max_examples=15, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=st.lists(st.tuples(st.sampled_from(["receive", "use"]), quantities),
                     min_size=1, max_size=12))
def test_remaining_is_received_minus_used_never_below_zero(store: Store, plan: list) -> None:
    """Random receipts and uses: each lot's remaining is exactly what came in minus what
    the accepted uses took; a use beyond it is refused and takes nothing."""
    if "HYP" not in store.made_materials():
        store.material("HYP", unit="mL")
    expected: dict[str, Decimal] = {}
    for action, amount in plan:
        if action == "receive" or not expected:
            lot = store.lot("HYP", str(amount * 4))
            expected[lot] = amount * 4
            continue
        lot = min(expected, key=lambda k: expected[k])  # the emptiest lot
        answer = store.record(store.context({"HYP": None}, [(lot, float(amount))],
                                            recording=True))
        if amount <= expected[lot]:
            assert answer.reasons == [], answer.reasons
            expected[lot] -= amount
        else:
            assert codes(answer) == ["lot_insufficient"]
        assert store.remaining(lot) == expected[lot] >= 0
