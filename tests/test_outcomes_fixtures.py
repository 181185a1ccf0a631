"""Shared fixtures of the outcomes tests (imported by the other test_outcomes_* files).

A test-only CART-AUTO version with `[follow_up]` (visits at 28 and 100 days, a 7-day
window, yearly to 3 years), loaded and approved next to the shipped ones, then a batch
made, released, delivered to the hospital and infused: the follow-up is scheduled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSWORD, sig
from tests.test_qc_fixtures import Lab, lab_fixture, plant_fixture  # noqa: F401 - fixtures

HOSPITAL = "HOSP1"
VERSION = 91
FOLLOW_UP = """
[follow_up]
visits = ["P28D", "P100D"]
long_term_years = 3
window = "P7D"
"""


def follow_up_definition(directory: Path, *, version: int = VERSION,
                         follow_up: str = FOLLOW_UP) -> Path:
    """CART-AUTO v1's master batch record as a new version with a `[follow_up]` table."""
    source = Path(__file__).parent.parent / "config" / "processes" / "cart-auto-v1.toml"
    text = source.read_text().replace("version = 1\n", f"version = {version}\n", 1)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"cart-auto-v{version}.toml"
    target.write_text(text + follow_up)
    return directory


@dataclass
class Ward:
    """The lab plus the hospital's side: infusions and their follow-up."""

    lab: Lab

    @property
    def clinician(self) -> Any:
        return self.lab.plant.clinician

    def tx(self, person: Any = None) -> Any:
        return self.lab.plant.tx(person or self.clinician)

    def made(self, expansion: list[tuple[float, ...]] | None = None) -> str:
        """Every step recorded in order; the expansion step once per (viable cells,
        viability %[, culture day]) given (default: once, in limits); the culture day
        for a version whose forecast has a ``culture_day`` parameter."""
        from tests.test_batches_fixtures import good_values

        plant = self.lab.plant
        number = plant.start()
        curve = plant.definition(number).curve
        for step in plant.definition(number).steps:
            if curve is not None and step.code == curve.step and expansion:
                for cells, viability, *day in expansion:
                    plant.record(number, step.code, {**good_values(step),
                                                     curve.viable_cells: cells,
                                                     curve.viability: viability,
                                                     **({"culture_day": day[0]} if day
                                                        else {})})
            else:
                plant.record(number, step.code)
        return number

    def infused(self, api: Any, *, expansion: list[tuple[float, ...]] | None = None,
                qc: dict[str, dict[str, Any]] | None = None) -> tuple[str, str, str]:
        """A released batch of the follow-up version, its bag delivered and administered
        (through the API, as the bedside does). ``qc``: entry fields of some release
        tests (the others pass in the middle of their spec). Returns (COI, batch, bag)."""
        from gmp_mes.models import User
        from identity import services as identity
        from labels import services as labels

        plant = self.lab.plant
        number = self.made(expansion)
        for spec in self.lab.specs(number):
            self.lab.result(number, spec.test, fields=(qc or {}).get(spec.test))
        self.lab.release(number)
        (bag,) = self.lab.items(number)
        with plant.tx(plant.operator) as s:
            identity.record_custody(s, bag, action="ship", site=HOSPITAL,
                                    user=s.get(User, plant.operator.user_id))
        with plant.tx(plant.clinician) as s:
            identity.record_custody(s, bag, action="receive", site=HOSPITAL,
                                    user=s.get(User, plant.clinician.user_id),
                                    location="LN2-1")
        with self.tx() as s:
            from batches import services as batches

            coi = batches.batch_coi(s, number)
            wristband = labels.payload_for_item(
                s, identity.get_patient(s, coi).wristband_item_id)
            product = labels.payload_for_item(s, bag)
        answer = api.post("/api/v1/administrations", json={
            "patient_payload": wristband, "product_payload": product,
            "signature": sig("administered")})
        assert answer.status_code == 201, answer.get_json()
        return coi, number, bag

    def administered_at(self, bag: str) -> datetime:
        from identity import services as identity

        with self.tx() as s:
            administration = identity.administration_of(s, bag)
            assert administration is not None
            return administration.administered_at


def record_body(visit: str = "P28D", *, assessed_at: str, response: str = "CR",
                **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"visit": visit, "assessed_at": assessed_at, "response": response,
                            "alive": True, "signature": sig("performed", PASSWORD)}
    body.update(extra)
    return body


@pytest.fixture(name="ward")
def ward_fixture(lab: Lab, tmp_path: Path) -> Ward:
    import processes.services as processes
    from tests.test_qc_fixtures import signed

    plant = lab.plant
    with plant.tx(plant.qa) as s:
        processes.load_process_definitions(s, [follow_up_definition(tmp_path / "processes")])
    with plant.tx(plant.qa) as s:
        processes.approve_process(s, "CART-AUTO", VERSION, user_id=plant.qa.user_id,
                                  signature=signed("approved"))
    return Ward(lab)
