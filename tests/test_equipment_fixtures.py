"""Shared fixtures of the equipment tests (imported by the other test_equipment_* files);
it holds no tests itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from gmp_mes.clock import clock
from gmp_mes.db import Database
from gmp_mes.registry import EquipmentNeed, StepContext, StepNeeds, StepResources
from gmp_mes.signatures import SignatureInput
from tests.conftest import PASSWORD, Person
from tests.helpers import trail_time

PLANT = "CLEAN1"


@dataclass
class Shop:
    """A plant with an admin, two operators and QA, and helpers over the services."""

    app: Flask
    db: Database
    admin: Person
    operator: Person
    qa: Person

    @contextmanager
    def tx(self, person: Person | None = None) -> Iterator[Session]:
        person = person or self.operator
        with self.app.app_context(), self.db.transaction(actor=person.actor) as s:
            yield s

    def register(self, equipment_id: str, type: str = "biosafety_cabinet", *,
                 interval: str | None = None, cleaning: bool = False,
                 name: str | None = None, site: str = PLANT) -> str:
        from equipment import services

        with self.tx(self.admin) as s:
            return services.register_equipment(
                s, equipment_id=equipment_id, type=type, name=name or f"Unit {equipment_id}",
                site_code=site, calibration_interval=interval, cleaning_required=cleaning,
                user_id=self.admin.user_id).equipment_id

    def event(self, equipment_id: str, kind: str, *, reason: str | None = None,
              valid_until: datetime | None = None, person: Person | None = None) -> Any:
        from equipment import services

        person = person or self.operator
        with self.tx(person) as s:
            event = services.record_event(
                s, equipment_id, kind=kind, user_id=person.user_id,
                signature=SignatureInput(PASSWORD, "performed"), reason=reason,
                valid_until=valid_until)
            return event.id

    def check(self, batch: str, step: str = "expansion", *, needs: tuple[str, ...] = (),
              given: tuple[str, ...] = (), recording: bool = False,
              apply_record: int | None = None, at: datetime | None = None) -> Any:
        """The provider's answer for a step; with ``apply_record`` the uses are written
        (as batches does after the step record exists)."""
        from equipment import services

        ctx = StepContext(
            batch_number=batch, coi_id="A999926000001Q", process_code="CART-AUTO",
            process_version=3, step_code=step,
            needs=StepNeeds(equipment=tuple(EquipmentNeed(t) for t in needs)),
            given=StepResources(equipment=given), at=at or clock.now(),
            performer_id=self.operator.user_id, verifier_username=None, site_code=PLANT,
            recording=recording or apply_record is not None)
        with self.tx() as s:
            result = services.check_step_equipment(s, ctx)
            if apply_record is not None and not result.reasons and result.apply is not None:
                result.apply(s, apply_record)
            return result

    def view(self, equipment_id: str) -> Any:
        from equipment import services

        with self.tx() as s:
            return services.equipment_view(s, equipment_id)


def codes(result: Any) -> list[str]:
    return [reason["code"] for reason in result.reasons]


@pytest.fixture(name="shop")
def shop_fixture(app: Flask, db: Database, make_user: Any) -> Shop:
    shop = Shop(app, db, admin=make_user("adam", "admin"), operator=make_user("olga", "operator"),
                qa=make_user("quinn", "qa"))
    # Frozen after the setup's audit events, never before them (DEVELOPING "Trusting the trail").
    clock.freeze(trail_time(db) + timedelta(seconds=1))
    return shop
