"""Every domain's scheduler job through the scheduler host: the expiry sweep (identity),
deviations open too long (batches) — one alert per cause however often the host runs,
delivered to the webhook (issue 8: one job interface, ``job(app) -> list[str]``)."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select

from gmp_mes import notify, registry
from gmp_mes.alerts import Alert
from gmp_mes.clock import clock, utcnow
from gmp_mes.scheduler import SchedulerHost, run_jobs
from tests.test_alerts_delivery import Receiver
from tests.test_batches_fixtures import Plant, good_values, plant_fixture  # noqa: F401


def kinds(db) -> list[tuple[str, str]]:
    with db.session(write=False) as s:
        return [(a.kind, a.subject_id) for a in s.scalars(select(Alert).order_by(Alert.id))]


def test_registered_jobs_raise_each_alert_once_and_deliver_it(app, db, plant: Plant) -> None:
    clock.freeze(utcnow())
    number = plant.start()
    plant.run_to(number, "transduction")
    values = good_values(plant.definition(number).step("expansion"))
    values["viability_pct"] = 55.5  # out of limits: a deviation opens
    [deviation] = plant.record(number, "expansion", values).deviations
    names = {getattr(job, "__module__", "") for job in registry.of(app).jobs}
    assert {"identity.sweep", "batches"} <= names
    assert [k for k in kinds(db) if k[0] == "deviation_open"] == []
    days = app.config["GMP_SETTINGS"].deviation_alert_days
    clock.advance(timedelta(days=days, seconds=1))  # the deviation is now open too long,
    # and the starting material's hold time (PT48H) has long passed: it was consumed by
    # the batch, so the sweep leaves it alone.
    host = SchedulerHost(app)
    try:
        first = host.tick()
        assert f"alert: deviation {deviation.number} open too long" in first
        assert host.tick() == []
        assert run_jobs(app).changes == []
    finally:
        host.stop()
    assert kinds(db) == [("deviation_open", deviation.number)]
    receiver = Receiver(fail_first=0)
    try:
        settings = app.config["GMP_SETTINGS"]
        app.config["GMP_SETTINGS"] = type(settings)(**{**settings.__dict__,
                                                         "webhook_url": receiver.url})
        assert notify.deliver_pending(app).sent == 1
    finally:
        receiver.close()
    document = json.loads(receiver.requests[0][1])
    assert document["kind"] == "deviation_open" and document["subject_id"] == deviation.number
    assert document["roles"] == ["qa"]
