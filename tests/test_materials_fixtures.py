"""Shared fixtures of the materials tests (imported by the other test_materials_* files).

Named test_materials_* because the materials area owns only those test files; it holds
no tests itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.db import Database
from gmp_mes.registry import (
    LotGiven,
    MaterialNeed,
    StepCheck,
    StepContext,
    StepNeeds,
    StepResources,
)
from gmp_mes.signatures import SignatureInput
from tests.conftest import PASSWORD, Person

PLANT = "CLEAN1"


def signed(meaning: str, password: str = PASSWORD) -> SignatureInput:
    return SignatureInput(password=password, meaning=meaning)


@dataclass
class Store:
    """The plant's material store: a receiving operator, two QA people, service helpers."""

    app: Flask
    db: Database
    operator: Person
    qa: Person
    qa2: Person
    steps: int = 0
    made: list[str] = field(default_factory=list)

    @contextmanager
    def tx(self, person: Person | None = None) -> Iterator[Session]:
        person = person or self.operator
        with self.app.app_context(), self.db.transaction(
            actor=Actor(person.username, person.user_id, person.username.title())
        ) as s:
            yield s

    def material(self, code: str = "IL2", *, unit: str = "vial", kind: str = "reagent") -> str:
        from materials import services

        with self.tx(self.qa) as s:
            services.create_material(s, code=code, name=f"{code} reagent", kind=kind,
                                     unit=unit, storage="2-8 °C", user_id=self.qa.user_id)
        return code

    def lot(self, code: str = "IL2", quantity: Any = "10", *, release: bool = True,
            expires_in: timedelta = timedelta(days=365), received_by: Person | None = None
            ) -> str:
        from materials import services

        person = received_by or self.operator
        with self.tx(person) as s:
            lot_id = services.receive_lot(
                s, code, supplier="Acme Bio", supplier_lot=f"SL-{len(self.made) + 1}",
                expires_at=utcnow() + expires_in, quantity=quantity, coa_reference="COA-1",
                user_id=person.user_id).lot_id
        self.made.append(lot_id)
        if release:
            with self.tx(self.qa) as s:
                services.release_lot(s, lot_id, user_id=self.qa.user_id,
                                     signature=signed("released"))
        return lot_id

    def made_materials(self) -> set[str]:
        from materials import services

        with self.tx() as s:
            return {m.code for m in services.list_materials(s)}

    def remaining(self, lot_id: str) -> Decimal:
        from materials import services

        with self.tx() as s:
            return services.get_lot(s, lot_id).remaining

    def context(self, needs: dict[str, float | None], given: list[tuple[str, float | None]],
                *, at: datetime | None = None, recording: bool = False,
                batch_number: str = "CART-AUTO-0001", coi_id: str = "A999926000001X",
                step_code: str = "activation") -> StepContext:
        return StepContext(
            batch_number=batch_number, coi_id=coi_id, process_code="CART-AUTO",
            process_version=3, step_code=step_code,
            needs=StepNeeds(materials=tuple(MaterialNeed(c, q) for c, q in needs.items())),
            given=StepResources(materials=tuple(LotGiven(lot, q) for lot, q in given)),
            at=at or utcnow(), performer_id=self.operator.user_id, verifier_username=None,
            site_code=PLANT, recording=recording)

    def check(self, ctx: StepContext) -> StepCheck:
        from materials import services

        with self.tx() as s:
            return services.check_step_materials(s, ctx)

    def record(self, ctx: StepContext, step_record_id: int | None = None) -> StepCheck:
        """What batches does at a step: check with the rows locked, then apply."""
        from materials import services

        with self.tx() as s:
            answer = services.check_step_materials(s, ctx)
            if answer.apply is not None and not answer.reasons:
                self.steps += 1
                answer.apply(s, step_record_id or self.steps)
            return answer


def codes(answer: StepCheck) -> list[str]:
    return sorted(r["code"] for r in answer.reasons)


@pytest.fixture(name="store")
def store_fixture(app: Flask, db: Database, make_user: Callable[..., Person]) -> Store:
    return Store(app, db, make_user("otto", "operator"), make_user("quinn", "qa"),
                 make_user("quincy", "qa"))
