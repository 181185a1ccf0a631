"""Calibration alerts through the sweep (SPEC §11: the sweep warns before a calibration
falls due): 14 and 3 days before, and overdue, each raised once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from gmp_mes.clock import clock
from tests.test_equipment_fixtures import Shop, shop_fixture  # noqa: F401

pytestmark = pytest.mark.requirement("21 CFR 211.68")


def _alerts(shop: Shop) -> list[tuple[str, str, str, str]]:
    with shop.db.engine.connect() as c:
        return [tuple(r) for r in c.execute(text(
            "SELECT cause, kind, roles, site_code FROM alert "
            "WHERE subject_type = 'equipment' ORDER BY id"))]


def test_calibration_alerts_raised_once_each(shop: Shop, runner) -> None:
    from equipment import sweep

    shop.register("INC-01", "incubator", interval="P30D")
    shop.register("CNT-01", "cell_counter")  # no calibration control: never alerted
    shop.event("INC-01", "calibrated")
    stamp = (clock.now() + timedelta(days=30)).strftime("%Y%m%d%H%M")
    with shop.tx() as s:
        assert sweep.sweep(s) == []
    clock.advance(timedelta(days=16, minutes=1))
    # Through the command that runs every registered job.
    result = runner.invoke(args=["sweep"])
    assert result.exit_code == 0, result.output
    assert f"calibration_due:INC-01:{stamp}:P14D" in result.output
    assert _alerts(shop) == [(f"calibration_due:INC-01:{stamp}:P14D", "calibration_due",
                              "qa,operator", "CLEAN1")]
    with shop.tx() as s:
        assert sweep.sweep(s) == []  # twice: nothing new
    clock.advance(timedelta(days=11))
    with shop.tx() as s:
        assert sweep.sweep(s) == [f"equipment calibration_due:INC-01:{stamp}:P3D"]
    clock.advance(timedelta(days=3))
    with shop.tx() as s:
        assert sweep.sweep(s) == [f"equipment calibration_overdue:INC-01:{stamp}"]
        assert sweep.sweep(s) == []
    assert [cause for cause, *_ in _alerts(shop)] == [
        f"calibration_due:INC-01:{stamp}:P14D", f"calibration_due:INC-01:{stamp}:P3D",
        f"calibration_overdue:INC-01:{stamp}"]


def test_a_late_sweep_raises_only_the_overdue_alert(shop: Shop) -> None:
    from equipment import sweep

    shop.register("INC-01", "incubator", interval="P30D")
    shop.event("INC-01", "calibrated")
    clock.advance(timedelta(days=40))
    with shop.tx() as s:
        lines = sweep.sweep(s)
    assert len(lines) == 1 and "calibration_overdue:INC-01:" in lines[0]


def test_the_sweep_job_is_registered(app) -> None:
    from equipment import sweep
    from gmp_mes import registry

    assert sweep.job in registry.of(app).jobs


def test_cli_equipment_list(shop: Shop, runner) -> None:
    result = runner.invoke(args=["equipment", "list"])
    assert result.exit_code == 0 and "no equipment registered" in result.output
    shop.register("INC-01", "incubator", interval="P30D")
    shop.event("INC-01", "out_of_service", reason="alarm")
    result = runner.invoke(args=["equipment", "list", "--site", "CLEAN1"])
    assert result.exit_code == 0, result.output
    assert "INC-01  incubator  CLEAN1  out_of_service" in result.output
    assert "is out of service: alarm" in result.output
