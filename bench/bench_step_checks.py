"""Recording a step that uses a material lot and two pieces of equipment vs the same step
without them (issue 17).

Target: with its checks (the lot released, in date, of the declared material, enough
left, consumed under a row lock; the equipment of the declared types, in service,
calibrated; the use logged) the step records within 1.5x the time of the same step
declaring nothing. Two processes differ only in what the repeated step declares; each
runs in its own SQLite database, timed the same way in the same run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask

from bench.common import Result
from gmp_mes import accounts, migrate
from gmp_mes.audit import Actor
from gmp_mes.clock import clock
from gmp_mes.registry import LotGiven, StepResources
from gmp_mes.signatures import SignatureInput

TARGET = 1.5
PASSWORD = "bench-password-123"

DEFINITION = """
code = "BENCH-{name}"
version = 1
name = "Bench process"

[shelf_life]
starting_material = "PT48H"
final_product = "P30D"
post_thaw = "PT3H"

[[steps]]
code = "receipt"
name = "Receipt"

[[steps]]
code = "feed"
name = "Daily feed and count"
repeatable = true
{needs}
[[steps.parameters]]
code = "viable_cells"
unit = "cells"
min = 1.0e6

[[steps]]
code = "fill"
name = "Fill"
creates = "final_product"
expiry_from = true
"""

NEEDS = """
[[steps.materials]]
material = "IL2"
quantity = 1.0

[[steps.equipment]]
type = "incubator"

[[steps.equipment]]
type = "cell_counter"
"""


@contextmanager
def _plant(needs: bool) -> Iterator[tuple[Flask, str, int, StepResources]]:
    """A database with one batch at its repeated step, and what that step is given."""
    from batches import services
    from equipment import services as equipment
    from gmp_mes.app import create_app
    from gmp_mes.models import User
    from identity import services as identity
    from materials import services as materials
    from processes import services as processes

    name = "CHECKED" if needs else "PLAIN"
    with tempfile.TemporaryDirectory() as folder:
        definitions = Path(folder) / "processes"
        definitions.mkdir()
        (definitions / "bench.toml").write_text(
            DEFINITION.format(name=name, needs=NEEDS if needs else ""))
        app = create_app({"database_url": f"sqlite:///{folder}/bench.sqlite",
                          "instance_path": str(Path(folder) / "instance"),
                          "secret_key": "bench", "process_dir": str(definitions)})
        db = app.extensions["gmp_mes.db"]
        migrate.upgrade(db.engine)
        clock.freeze(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
        sig = SignatureInput(PASSWORD, "performed")
        with app.app_context(), db.transaction(actor=Actor.system("bench")) as s:
            accounts.create_site(s, "CLEAN1", kind="manufacturing", name="Cleanroom")
            accounts.create_site(s, "HOSP1", kind="treatment", name="Hospital")
            accounts.create_site(s, "APH1", kind="collection", name="Apheresis")
            ids = {n: accounts.create_user(s, n, password=PASSWORD, roles=[r], site_code=site,
                                           full_name=n.title()).id
                   for n, r, site in (("olga", "operator", "CLEAN1"), ("quinn", "qa", "CLEAN1"),
                                      ("adam", "admin", "CLEAN1"), ("april", "clinician", "APH1"))}
            processes.load_process_definitions(s)
            processes.approve_process(s, f"BENCH-{name}", 1, user_id=ids["quinn"],
                                     signature=SignatureInput(PASSWORD, "approved"))
            given = StepResources()
            if needs:
                materials.create_material(s, code="IL2", name="Interleukin-2", kind="reagent",
                                          unit="vial", user_id=ids["quinn"])
                lot = materials.receive_lot(
                    s, "IL2", supplier="Bench", supplier_lot="IL2-1",
                    expires_at=datetime(2027, 1, 1, tzinfo=UTC), quantity=100_000,
                    user_id=ids["olga"]).lot_id
                materials.release_lot(s, lot, user_id=ids["quinn"],
                                      signature=SignatureInput(PASSWORD, "released"))
                for equipment_id, kind in (("INC-01", "incubator"), ("CNT-01", "cell_counter")):
                    equipment.register_equipment(
                        s, equipment_id=equipment_id, type=kind, name=kind,
                        site_code="CLEAN1", user_id=ids["adam"], calibration_interval="P365D")
                    equipment.record_event(s, equipment_id, kind="calibrated",
                                           user_id=ids["olga"], signature=sig)
                given = StepResources(materials=(LotGiven(lot),),
                                      equipment=("INC-01", "CNT-01"))
            coi = identity.enrol_patient(s, given_name="Grace", family_name="Hopper",
                                         date_of_birth=date(1968, 12, 9), mrn="B1",
                                         treatment_site="HOSP1").coi_id
            item = identity.record_collection(
                s, coi_id=coi, collected_at=datetime(2026, 3, 2, 6, 0, tzinfo=UTC),
                site="APH1", volume_ml=230.0).item_id
            for action, who in (("ship", "april"), ("receive", "olga")):
                identity.record_custody(s, item, action=action, site="CLEAN1",
                                        user=s.get(User, ids[who]))
            number = services.start_batch(s, item_id=item, user_id=ids["olga"],
                                          process_code=f"BENCH-{name}").batch_number
            services.record_step(s, number, "receipt", values={}, user_id=ids["olga"],
                                 signature=sig)
        try:
            yield app, number, ids["olga"], given
        finally:
            db.dispose()
            clock.unfreeze()


def _recorder(app: Flask, number: str, olga: int, given: StepResources) -> Any:
    from batches import services

    db = app.extensions["gmp_mes.db"]
    sig = SignatureInput(PASSWORD, "performed")

    def record() -> float:
        clock.advance(timedelta(minutes=5))
        began = time.perf_counter()
        with app.app_context(), db.transaction(actor=Actor("olga", olga, "Olga")) as s:
            services.record_step(s, number, "feed", values={"viable_cells": 2.0e6},
                                 user_id=olga, signature=sig, resources=given)
        return (time.perf_counter() - began) * 1000

    return record


def _recording_ms(repeat: int) -> tuple[float, float]:
    """Median ms per record (plain, checked), the two recorded alternately so that
    drift of the machine (disk flushes, other load) falls on both alike."""
    with _plant(False) as plain_plant, _plant(True) as checked_plant:
        plain, checked = _recorder(*plain_plant), _recorder(*checked_plant)
        plain(), checked()  # warm-up
        samples: tuple[list[float], list[float]] = ([], [])
        for _ in range(repeat):
            samples[0].append(plain())
            samples[1].append(checked())
    return statistics.median(samples[0]), statistics.median(samples[1])


def run(args: Any) -> list[Result]:
    repeat = 5 if args.quick else 61
    plain, checked = _recording_ms(repeat)
    return [Result(
        "step_checks: record a step with a lot and 2 equipment", checked, "ms", plain,
        "the same step declaring nothing", f"ratio <= {TARGET}", checked <= TARGET * plain,
        f"median of {repeat} records on SQLite, each its own transaction, the two steps "
        "alternating (lot consumed under a row lock, equipment checked, its use logged)",
    )]
