"""What touches the demo's cells (issue 17): the materials and released lots CART-AUTO v3
names, the cleanroom's equipment with its calibration, and what each step is given.

Created through materials' and equipment's services by the people who would do it: the
operator receives the lots, QA releases them (never the receiver: segregation of
duties), the admin registers the equipment, the operator calibrates and cleans it. One
lot of each material waits in quarantine and one has been rejected, and one incubator is
out of service, so the materials and equipment pages show every state.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from sqlalchemy.orm import Session

import equipment.services as equipment_services
import materials.services as materials_services
from gmp_mes.clock import utcnow
from gmp_mes.models import User
from gmp_mes.registry import LotGiven, StepResources
from gmp_mes.signatures import SignatureInput
from processes.definitions import Step


class Seeding(Protocol):
    """What the demo's seeder offers (demo.seed.Seeder): its session, acting as a user."""

    s: Session

    def acting(self, username: str) -> AbstractContextManager[User]: ...

    def sig(self, meaning: str, reason: str | None = None) -> SignatureInput: ...

# code, name, kind, unit, storage, supplier, quantity received, used per step when the
# definition leaves the quantity to the operator
MATERIALS: tuple[tuple[str, str, str, str, str, str, str, float | None], ...] = (
    ("CD4CD8-BEADS", "CD4 and CD8 MicroBeads, GMP grade", "reagent", "vial", "2-8 °C",
     "Miltenyi Biotec", "12", None),
    ("TS-520", "Closed tubing set for the automated processing system", "consumable",
     "set", "15-25 °C", "Miltenyi Biotec", "10", None),
    ("TRANSACT", "Anti-CD3/CD28 nanomatrix (TransAct)", "reagent", "mL", "2-8 °C",
     "Miltenyi Biotec", "40", 2.0),
    ("TEXMACS", "Serum-free T cell medium (TexMACS GMP)", "medium", "mL", "2-8 °C, dark",
     "Miltenyi Biotec", "20000", 500.0),
    ("IL7", "Interleukin-7, 25 µg vial, GMP grade", "reagent", "vial", "-20 °C",
     "Miltenyi Biotec", "20", None),
    ("IL15", "Interleukin-15, 25 µg vial, GMP grade", "reagent", "vial", "-20 °C",
     "Miltenyi Biotec", "20", None),
    ("LV-CD19", "Anti-CD19 CAR lentiviral vector (4-1BB/CD3ζ)", "vector", "mL",
     "<= -65 °C", "Academic vector facility", "30", 2.5),
    ("CS10", "CryoStor CS10 cryopreservation medium (10 % DMSO)", "excipient", "mL",
     "2-8 °C", "BioLife Solutions", "2000", 40.0),
)

# id, type, name, calibration interval, cleaning required
EQUIPMENT: tuple[tuple[str, str, str, str | None, bool], ...] = (
    ("CPS-01", "closed_processing_system", "Automated closed processing system 1",
     "P365D", False),
    ("BSC-01", "biosafety_cabinet", "Class II biosafety cabinet, grade A, room B1", "P182D",
     True),
    ("INC-01", "incubator", "CO2 incubator 1 (37 °C, 5 % CO2)", "P365D", False),
    ("INC-02", "incubator", "CO2 incubator 2 (37 °C, 5 % CO2)", "P365D", False),
    ("CNT-01", "cell_counter", "Automated cell counter (AO/PI)", "P182D", False),
    ("CRF-01", "controlled_rate_freezer", "Controlled-rate freezer 1", "P365D", False),
)


@dataclass
class Supplies:
    """The released lot of each material and the equipment of each type in use."""

    lots: dict[str, str] = field(default_factory=dict)  # material code -> lot id
    units: dict[str, float | None] = field(default_factory=dict)  # per-step amount typed
    equipment: dict[str, str] = field(default_factory=dict)  # type -> equipment id
    last_batch: dict[str, str] = field(default_factory=dict)  # equipment id -> batch

    def resources(self, step: Step) -> StepResources:
        """What the operator scans at ``step``: a released lot per declared material
        (the amount typed where the step leaves it open) and the equipment per type."""
        return StepResources(
            materials=tuple(
                LotGiven(self.lots[m.material],
                         None if m.quantity is not None else self.units[m.material])
                for m in step.needs.materials),
            equipment=tuple(self.equipment[e.type] for e in step.needs.equipment),
        )


def seed(seeder: Seeding) -> Supplies:
    """Materials, lots and equipment, as the demo's people would record them."""
    s, acting, sig = seeder.s, seeder.acting, seeder.sig
    supplies = Supplies()
    now = utcnow()
    for code, name, kind, unit, storage, supplier, quantity, per_step in MATERIALS:
        with acting("qa") as qa:
            materials_services.create_material(s, code=code, name=name, kind=kind, unit=unit,
                                               storage=storage, user_id=qa.id)
        with acting("operator") as operator:
            lot = materials_services.receive_lot(
                s, code, supplier=supplier,
                supplier_lot=f"{code.replace('-', '')[:3]}-{now:%y}-0417",
                expires_at=now + timedelta(days=300), quantity=quantity,
                coa_reference=f"CoA {code}-0417", user_id=operator.id)
        with acting("qa") as qa:
            materials_services.release_lot(s, lot.lot_id, user_id=qa.id,
                                           signature=sig("released", "CoA reviewed"))
        supplies.lots[code] = lot.lot_id
        supplies.units[code] = per_step
    with acting("operator") as operator:  # a new vector lot awaits QA's review
        materials_services.receive_lot(
            s, "LV-CD19", supplier="Academic vector facility", supplier_lot="LV-26-0102",
            expires_at=now + timedelta(days=360), quantity="30",
            coa_reference="CoA LV-26-0102 (titre pending)", user_id=operator.id)
        rejected = materials_services.receive_lot(
            s, "TEXMACS", supplier="Miltenyi Biotec", supplier_lot="TEX-26-0311",
            expires_at=now + timedelta(days=200), quantity="10000",
            coa_reference="CoA TEX-26-0311", user_id=operator.id)
    with acting("qa") as qa:
        materials_services.reject_lot(s, rejected.lot_id, user_id=qa.id,
                                      signature=sig("rejected"),
                                      reason="carton arrived above 8 °C (logger alarm)")
    for equipment_id, kind, name, interval, cleaning in EQUIPMENT:
        with acting("admin") as admin:
            equipment_services.register_equipment(
                s, equipment_id=equipment_id, type=kind, name=name, site_code="CLEAN-1",
                user_id=admin.id, calibration_interval=interval, cleaning_required=cleaning)
        with acting("operator") as operator:
            equipment_services.record_event(s, equipment_id, kind="calibrated",
                                            user_id=operator.id,
                                            signature=sig("performed"))
        supplies.equipment.setdefault(kind, equipment_id)
    with acting("operator") as operator:
        equipment_services.record_event(
            s, "INC-02", kind="out_of_service", user_id=operator.id,
            signature=sig("performed"), reason="CO2 sensor drift: service visit booked")
    return supplies


def before_step(seeder: Seeding, supplies: Supplies, batch_number: str, step: Step) -> None:
    """Clean what needs cleaning before another batch uses it (21 CFR 211.67)."""
    s = seeder.s
    for need in step.needs.equipment:
        equipment_id = supplies.equipment[need.type]
        last = supplies.last_batch.get(equipment_id)
        if last is not None and last != batch_number and equipment_id == "BSC-01":
            with seeder.acting("operator") as operator:
                equipment_services.record_event(s, equipment_id, kind="cleaned",
                                                user_id=operator.id,
                                                signature=seeder.sig("performed"))
        supplies.last_batch[equipment_id] = batch_number
