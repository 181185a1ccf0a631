"""The equipment check at a step (SPEC §11): each refusal reason alone, all together, the
cleaning rule across batches, and the use log the check writes."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import text

from equipment import services
from gmp_mes import registry
from gmp_mes.clock import clock
from tests.test_equipment_fixtures import Shop, codes, shop_fixture  # noqa: F401

pytestmark = pytest.mark.requirement("21 CFR 211.182")

NEEDS = ("biosafety_cabinet", "incubator")


def _ready(shop: Shop) -> None:
    shop.register("BSC-01", "biosafety_cabinet", interval="P180D", cleaning=True)
    shop.register("INC-01", "incubator", interval="P365D")
    shop.event("BSC-01", "calibrated")
    shop.event("INC-01", "calibrated")


def test_no_equipment_declared_or_given_is_empty_and_fast(shop: Shop, db) -> None:
    result = shop.check("B1")
    assert result.reasons == [] and result.signed is None and result.apply is None


def test_fit_equipment_passes_signs_and_logs_use(shop: Shop, db) -> None:
    _ready(shop)
    clock.advance(timedelta(minutes=5))
    result = shop.check("B1", needs=NEEDS, given=("bsc-01", " INC-01 "), apply_record=7)
    assert result.reasons == []
    assert [entry["equipment_id"] for entry in result.signed] == ["BSC-01", "INC-01"]
    assert result.signed[0]["type"] == "biosafety_cabinet"
    assert result.signed[0]["calibration_valid_until"].endswith("Z")
    with db.engine.connect() as c:
        rows = c.execute(text("SELECT equipment_id, batch_number, step_record_id, step_code "
                              "FROM equipment_use ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [("BSC-01", "B1", 7, "expansion"),
                                        ("INC-01", "B1", 7, "expansion")]


def test_equipment_missing_alone(shop: Shop) -> None:
    _ready(shop)
    result = shop.check("B1", needs=NEEDS, given=("BSC-01",))
    assert codes(result) == ["equipment_missing"]
    assert "incubator" in result.reasons[0]["message"]


def test_equipment_wrong_type_alone(shop: Shop) -> None:
    _ready(shop)
    shop.register("CNT-01", "cell_counter")
    result = shop.check("B1", needs=NEEDS, given=("BSC-01", "INC-01", "CNT-01"))
    assert codes(result) == ["equipment_wrong_type"]


def test_given_equipment_on_a_step_that_declares_none_is_wrong_type(shop: Shop) -> None:
    _ready(shop)
    assert codes(shop.check("B1", given=("INC-01",))) == ["equipment_wrong_type"]


@pytest.mark.requirement("21 CFR 211.67")
def test_out_of_service_alone(shop: Shop) -> None:
    _ready(shop)
    shop.event("INC-01", "out_of_service", reason="CO2 sensor drift")
    result = shop.check("B1", needs=NEEDS, given=("BSC-01", "INC-01"))
    assert codes(result) == ["equipment_out_of_service"]
    assert "CO2 sensor drift" in result.reasons[0]["message"]


@pytest.mark.requirement("21 CFR 211.68")
def test_calibration_overdue_alone_at_the_step_time(shop: Shop) -> None:
    _ready(shop)
    assert shop.check("B1", needs=NEEDS, given=("BSC-01", "INC-01")).reasons == []
    clock.advance(timedelta(days=181))
    assert codes(shop.check("B1", needs=NEEDS, given=("BSC-01", "INC-01"))) == [
        "calibration_overdue"]


@pytest.mark.requirement("21 CFR 211.68")
def test_never_calibrated_equipment_with_an_interval_is_overdue(shop: Shop) -> None:
    shop.register("INC-02", "incubator", interval="P365D")
    assert codes(shop.check("B1", needs=("incubator",), given=("INC-02",))) == [
        "calibration_overdue"]


def test_equipment_of_another_site_alone(shop: Shop, make_site) -> None:
    make_site("CLEAN2", "manufacturing")
    _ready(shop)
    shop.register("INC-09", "incubator", interval="P365D", site="CLEAN2")
    shop.event("INC-09", "calibrated")
    result = shop.check("B1", needs=NEEDS, given=("BSC-01", "INC-09"))
    assert codes(result) == ["equipment_other_site"]
    assert "CLEAN2" in result.reasons[0]["message"]


def test_unknown_equipment(shop: Shop) -> None:
    result = shop.check("B1", needs=("incubator",), given=("NOPE-9",))
    assert codes(result) == ["equipment_unknown", "equipment_missing"]


def test_a_bad_payload_is_refused_with_the_label_code(shop: Shop) -> None:
    _ready(shop)
    result = shop.check("B1", needs=("incubator",), given=("GMP1:EQP:INC-01:garbage",))
    assert codes(result)[0] == "malformed"
    assert "equipment_missing" in codes(result)


@pytest.mark.requirement("21 CFR 211.67")
def test_cleaning_required_across_two_batches_not_the_same_batch(shop: Shop) -> None:
    _ready(shop)
    clock.advance(timedelta(minutes=1))
    assert shop.check("B1", needs=NEEDS, given=("BSC-01", "INC-01"), apply_record=1).reasons == []
    clock.advance(timedelta(hours=24))
    # The same batch again (the daily count): no cleaning needed in between.
    assert shop.check("B1", needs=NEEDS, given=("BSC-01", "INC-01"), apply_record=2).reasons == []
    clock.advance(timedelta(minutes=1))
    # Another batch: the cabinet must be cleaned first; the incubator needs no cleaning.
    result = shop.check("B2", needs=NEEDS, given=("BSC-01", "INC-01"))
    assert codes(result) == ["cleaning_required"]
    assert "B1" in result.reasons[0]["message"]
    assert shop.view("BSC-01").used_since_cleaning_by == "B1"
    clock.advance(timedelta(minutes=1))
    shop.event("BSC-01", "cleaned")
    clock.advance(timedelta(minutes=1))
    assert shop.check("B2", needs=NEEDS, given=("BSC-01", "INC-01"), apply_record=3).reasons == []
    clock.advance(timedelta(minutes=1))
    # B1 now needs a cleaning after B2.
    assert codes(shop.check("B1", needs=NEEDS, given=("BSC-01", "INC-01"))) == [
        "cleaning_required"]


@pytest.mark.requirement("21 CFR 211.68")
@pytest.mark.requirement("21 CFR 211.67")
def test_every_reason_together(shop: Shop, make_site) -> None:
    make_site("CLEAN2", "manufacturing")
    shop.register("BSC-01", "biosafety_cabinet", interval="P180D", cleaning=True)
    shop.register("BSC-02", "biosafety_cabinet", interval="P30D")
    shop.register("CNT-01", "cell_counter", site="CLEAN2")
    shop.event("BSC-01", "calibrated")
    shop.event("BSC-02", "calibrated")
    clock.advance(timedelta(minutes=1))
    assert shop.check("OTHER", needs=("biosafety_cabinet",), given=("BSC-01",),
                      apply_record=1).reasons == []
    shop.event("BSC-02", "out_of_service", reason="HEPA filter torn")
    clock.advance(timedelta(days=31))
    result = shop.check("B1", needs=("biosafety_cabinet", "biosafety_cabinet", "incubator"),
                        given=("BSC-01", "BSC-02", "CNT-01", "GHOST"))
    assert codes(result) == ["equipment_unknown", "equipment_missing", "equipment_wrong_type",
                             "equipment_other_site", "equipment_out_of_service",
                             "calibration_overdue", "cleaning_required"]
    assert result.apply is not None  # batches never calls it when a provider refused


def test_recording_locks_and_the_dry_run_writes_nothing(shop: Shop, db) -> None:
    _ready(shop)
    shop.check("B1", needs=NEEDS, given=("BSC-01", "INC-01"), recording=True)
    with db.engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM equipment_use")).scalar() == 0


def test_the_same_equipment_twice_counts_once(shop: Shop) -> None:
    _ready(shop)
    result = shop.check("B1", needs=("incubator", "incubator"), given=("INC-01", "inc-01"))
    assert codes(result) == ["equipment_missing"]
    assert len(result.signed) == 1


@pytest.mark.requirement("Regulation (EC) 1394/2007 Art. 15")
def test_batch_record_section_lists_the_equipment_used(shop: Shop) -> None:
    # Registered with the executed record (qc's sections need a real batch: not asked here).
    assert services.batch_record_sections in registry.batch_record_sections.providers()
    _ready(shop)
    clock.advance(timedelta(minutes=1))
    shop.check("B1", needs=NEEDS, given=("BSC-01", "INC-01"), apply_record=11)
    shop.check("B9", step="fill", needs=("incubator",), given=("INC-01",), apply_record=12)
    with shop.tx() as s:
        (section,) = services.batch_record_sections(s, "B1")
    assert section.key == "equipment"
    assert [(u["equipment_id"], u["step_code"], u["step_record_id"]) for u in section.data] == [
        ("BSC-01", "expansion", 11), ("INC-01", "expansion", 11)]
    assert section.data[0]["used_by"] == shop.operator.username
    assert section.table is not None and section.table.title == "Equipment used"
    assert section.table.rows[0][2] == "BSC-01" and "UTC" in section.table.rows[0][-1]
    with shop.tx() as s:
        (empty,) = services.batch_record_sections(s, "NONE")
    assert empty.data == [] and empty.table.rows == ()


@pytest.mark.requirement("21 CFR 211.67")
def test_two_batches_cannot_both_take_a_cabinet_that_needs_cleaning(shop: Shop) -> None:
    """Both steps check the clean cabinet at once; the row lock makes the second see the
    first's use: exactly one is recorded, the other refused cleaning_required."""
    shop.register("BSC-01", "biosafety_cabinet", cleaning=True)
    clock.advance(timedelta(minutes=1))
    barrier = threading.Barrier(2)
    answers: dict[str, list[str]] = {}

    def step(batch: str, record: int) -> None:
        barrier.wait()
        answers[batch] = codes(shop.check(batch, needs=("biosafety_cabinet",),
                                          given=("BSC-01",), apply_record=record))

    threads = [threading.Thread(target=step, args=(b, r)) for b, r in (("B1", 1), ("B2", 2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(answers.values()) == [[], ["cleaning_required"]]
    with shop.tx() as s:
        assert len(services.logbook(s, "BSC-01").uses) == 1
