"""Warnings before a qualification expires (SPEC §12; EU GMP Part IV 3): 30 and 7 days
ahead, for someone on a running batch, once per record and threshold (the sweep run
twice raises nothing new); a renewal acknowledges them; a finished batch's people and
people on no batch are not warned."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from gmp_mes.alerts import Alert
from gmp_mes.clock import clock
from tests.helpers import trail_time
from tests.test_batches_fixtures import Plant, plant_fixture, sign  # noqa: F401
from training import services, sweep

pytestmark = [pytest.mark.requirement("21 CFR 211.25"),
              pytest.mark.requirement("EU GMP Part IV 3")]


def _grant(plant: Plant, person, days: float, code: str = "cart_manufacturing") -> int:
    with plant.tx(plant.qa) as s:
        return services.grant_qualification(
            s, person.username, code=code, valid_until=clock.now() + timedelta(days=days),
            user_id=plant.qa.user_id, signature=sign(meaning="approved")).id


def _sweep(plant: Plant) -> list[str]:
    with plant.app.app_context():
        return sweep.job(plant.app)


def _alerts(plant: Plant) -> list[tuple[str, str, str, str | None]]:
    with plant.tx() as s:
        return [(a.cause, a.status, a.roles, a.site_code) for a in s.scalars(
            select(Alert).where(Alert.kind == "qualification_expiring").order_by(Alert.id))]


def test_the_sweep_warns_30_and_7_days_ahead_once_each(plant: Plant) -> None:
    clock.freeze(trail_time(plant.db) + timedelta(seconds=1))
    number = plant.start()  # v1: olga starts, performs; oscar verifies
    plant.record(number, "receipt")
    olga = _grant(plant, plant.operator, days=40)
    _grant(plant, plant.clinician, days=10)  # on no batch: not warned
    assert _sweep(plant) == []
    clock.advance(timedelta(days=11))  # 29 days left
    assert _sweep(plant) == [f"training qualification_expiring:{olga}:P30D"]
    assert _sweep(plant) == []  # once per record and threshold
    clock.advance(timedelta(days=23))  # 6 days left
    assert _sweep(plant) == [f"training qualification_expiring:{olga}:P7D"]
    assert _sweep(plant) == []
    assert _alerts(plant) == [
        (f"qualification_expiring:{olga}:P30D", "open", "qa,operator", "CLEAN1"),
        (f"qualification_expiring:{olga}:P7D", "open", "qa,operator", "CLEAN1")]
    # The renewal (a new record) answers both warnings.
    renewal = _grant(plant, plant.operator, days=365)
    assert {status for _, status, _, _ in _alerts(plant)} == {"acknowledged"}
    assert renewal != olga and _sweep(plant) == []


def test_people_of_finished_batches_are_not_warned(plant: Plant) -> None:
    from batches import services as batches

    clock.freeze(trail_time(plant.db) + timedelta(seconds=1))
    number = plant.start()
    plant.record(number, "receipt")
    _grant(plant, plant.operator2, days=20)  # oscar verified the receipt
    with plant.tx(plant.qa) as s:
        people = services.running_batch_people(s)
        assert {plant.operator.user_id, plant.operator2.user_id} <= people
        batches.set_batch_status(s, number, "rejected", reason="out of specification")
    assert _sweep(plant) == []
