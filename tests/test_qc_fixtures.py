"""Shared fixtures of the qc and release tests (imported by test_qc_* and test_release_*).

Named test_qc_* because the qc area owns only those test files; it holds no tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from gmp_mes.signatures import SignatureInput
from tests.conftest import PASSWORD, Person
from tests.test_batches_fixtures import Plant, plant_fixture  # noqa: F401 - fixture


def passing(spec: Any) -> dict[str, Any]:
    """Entry fields of a result inside the specification."""
    if spec.accept is not None:
        return {"outcome": spec.accept}
    if spec.min is not None and spec.max is not None:
        return {"value": (spec.min + spec.max) / 2}
    if spec.min is not None:
        return {"value": spec.min * 2}
    return {"value": spec.max / 2}


def failing(spec: Any) -> dict[str, Any]:
    """Entry fields of a result outside the specification."""
    if spec.accept is not None:
        return {"outcome": "positive"}
    if spec.min is not None:
        return {"value": spec.min - abs(spec.min) * 0.5 - 1}
    return {"value": spec.max * 2 + 1}


def signed(meaning: str = "performed", password: str = PASSWORD) -> SignatureInput:
    return SignatureInput(password=password, meaning=meaning)


@dataclass
class Lab:
    """The plant plus QC analysts and a second QA person; service-level helpers."""

    plant: Plant
    analyst: Person
    analyst2: Person
    qa2: Person

    @property
    def qa(self) -> Person:
        return self.plant.qa

    def tx(self, person: Person | None = None) -> Any:
        return self.plant.tx(person or self.analyst)

    def specs(self, number: str) -> list[Any]:
        from batches import services

        with self.tx() as s:
            return services.qc_specs(s, number)

    def spec(self, number: str, test: str) -> Any:
        return next(s for s in self.specs(number) if s.test == test)

    def made(self, *, bags: int = 1) -> str:
        """A batch with every step recorded (awaiting release), no QC yet."""
        from tests.test_batches_fixtures import good_values

        number = self.plant.start()
        for step in self.plant.definition(number).steps:
            values = good_values(step)
            if step.creates == "final_product":
                values["bags"] = bags
            self.plant.record(number, step.code, values)
        return number

    def result(self, number: str, test: str, *, person: Person | None = None,
               fields: dict[str, Any] | None = None, **kw: Any) -> Any:
        from qc import services

        person = person or self.analyst
        fields = passing(self.spec(number, test)) if fields is None else fields
        with self.tx(person) as s:
            result = services.record_result(s, number, test=test, user_id=person.user_id,
                                            signature=signed(), **fields, **kw)
            return result.id, result.passed

    def all_pass(self, number: str, *, skip: tuple[str, ...] = ()) -> None:
        for spec in self.specs(number):
            if spec.test not in skip:
                self.result(number, spec.test)

    def ready(self, *, skip: tuple[str, ...] = (), bags: int = 1) -> str:
        number = self.made(bags=bags)
        self.all_pass(number, skip=skip)
        return number

    def release(self, number: str, person: Person | None = None, *,
                password: str = PASSWORD, justification: str | None = None,
                conditional: bool = False) -> Any:
        from qc import services

        person = person or self.qa
        with self.tx(person) as s:
            decision = services.release_batch(
                s, number, user_id=person.user_id, signature=signed("released", password),
                conditional=conditional, justification=justification)
            return decision.kind

    def overview(self, number: str) -> dict[str, dict[str, Any]]:
        from qc import services
        from qc.schemas import record_qc

        with self.tx() as s:  # as the batch record shows it (JSON)
            return {row["test"]: row for row in record_qc(services.qc_overview(s, number))}

    def items(self, number: str) -> dict[str, str]:
        from batches import services as batches
        from identity import services as identity

        with self.tx() as s:
            return {i: identity.get_item(s, i).status
                    for i in batches.final_product_item_ids(s, number)}

    def status(self, number: str) -> str:
        return self.plant.batch(number).status


@pytest.fixture(name="lab")
def lab_fixture(plant: Plant, make_user: Any) -> Lab:
    return Lab(plant, make_user("quentin", "qc"), make_user("queenie", "qc"),
               make_user("quincy", "qa"))
