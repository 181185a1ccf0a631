"""The patient timeline (SPEC §13): when each milestone from enrolment to administration
was reached, the time between consecutive milestones and the vein-to-vein time.

No tables: everything is read from identity, batches and qc through their services.
Every milestone is a time the system recorded at the event (the audit trail's clock,
``gmp_mes.clock``), except ``collected``: the apheresis time the collection states
(``collected_at``, entered by the person who recorded the collection, checked against the
clock by identity), since the vein-to-vein time runs from the patient's vein.

Which record a milestone comes from when there are several:

- ``enrolled``: the patient's enrolment.
- ``collected``: the **first** apheresis collection of the patient. A re-collection after
  a failed batch does not restart the clock: the patient waited from the first one.
- The **timeline's batch**: the batch whose final product was administered first (the
  patient's first infusion); with none administered, the batch started last (the one
  still under way or the latest attempt).
- ``batch_started``: that batch's start; ``filled``: the first record of its
  final-product step (``creates = "final_product"``; a correction keeps the original's
  time); ``released``: its first release, conditional or not (the time the product could
  leave; a later final release does not move it); null when it was rejected unreleased.
- ``shipped``, ``received``, ``thawed``: the first ``ship``, ``receive`` and ``thaw``
  custody event of any final-product bag of that batch (first shipment of a final
  product, and so on).
- ``administered``: the first administration of a bag of that batch.

``vein_to_vein`` is ``administered - collected`` (null until administered).
``durations`` (a gmp-mes extension) lists each consecutive pair of milestones in the order
above with the time between them, null when either is not reached.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from sqlalchemy.orm import Session

import identity.services as identity
from batches import services as batches
from qc import services as qc

MILESTONES = ("enrolled", "collected", "batch_started", "filled", "released", "shipped",
              "received", "thawed", "administered")
# Custody actions that are milestones of the final product (identity's action names).
CUSTODY_MILESTONES = {"ship": "shipped", "receive": "received", "thaw": "thawed"}
RELEASE_KINDS = frozenset({"release", "conditional_release"})


@dataclass(frozen=True)
class Duration:
    """The time from one milestone to the next (None while either is not reached)."""

    start: str
    end: str
    delta: timedelta | None


@dataclass(frozen=True)
class Timeline:
    coi_id: str
    batch_number: str | None
    process_code: str | None
    process_version: int | None
    batch_status: str | None
    milestones: dict[str, datetime | None]
    durations: list[Duration]

    @property
    def vein_to_vein(self) -> timedelta | None:
        return vein_to_vein(self.milestones.get("collected"),
                            self.milestones.get("administered"))


def vein_to_vein(collected: datetime | None, administered: datetime | None
                 ) -> timedelta | None:
    """Collection to administration: the one definition, for the timeline and the report."""
    if collected is None or administered is None:
        return None
    return administered - collected


def first(times: Iterable[datetime | None]) -> datetime | None:
    """The earliest of the times given (None when there is none)."""
    known = [t for t in times if t is not None]
    return min(known) if known else None


def durations(milestones: dict[str, datetime | None]) -> list[Duration]:
    out = []
    for start, end in pairwise(MILESTONES):
        a, b = milestones.get(start), milestones.get(end)
        out.append(Duration(start, end, None if a is None or b is None else b - a))
    return out


def first_administrations(administered: Iterable[tuple[str, str | None, datetime | None]]
                          ) -> dict[str, tuple[str | None, datetime]]:
    """From (COI, batch number, administered at) rows of final-product bags: each
    patient's first administration and its batch. The report and the timeline both ask
    this, so "the patient's infusion" means one thing."""
    chosen: dict[str, tuple[str | None, datetime]] = {}
    for coi_id, batch_number, at in administered:
        if at is not None and (coi_id not in chosen or at < chosen[coi_id][1]):
            chosen[coi_id] = (batch_number, at)
    return chosen


def _bag_milestones(session: Session, bags: list[str]) -> dict[str, datetime | None]:
    found: dict[str, list[datetime]] = {name: [] for name in CUSTODY_MILESTONES.values()}
    given: list[datetime | None] = []
    for bag in bags:
        for event in identity.custody_trail(session, bag):
            name = CUSTODY_MILESTONES.get(event.action)
            if name is not None:
                found[name].append(event.occurred_at)
        administration = identity.administration_of(session, bag)
        given.append(administration.administered_at if administration else None)
    return {**{name: first(times) for name, times in found.items()},
            "administered": first(given)}


def _filled(session: Session, batch_number: str) -> datetime | None:
    batch = batches.get_batch(session, batch_number)
    creating = batches.definition_of_batch(batch).creating_step
    if creating is None:
        return None
    return first(r.performed_at for r in batches.all_records(session, batch)
                 if r.step_code == creating.code)


def _released(session: Session, batch_number: str) -> datetime | None:
    return first(d.decided_at for d in qc.decisions_of(session, batch_number)
                 if d.kind in RELEASE_KINDS)


def patient_timeline(session: Session, coi_id: str) -> Timeline:
    """The patient's timeline (404 ``NotFound`` for an unknown COI ID)."""
    patient = identity.get_patient(session, coi_id)
    milestones: dict[str, datetime | None] = dict.fromkeys(MILESTONES)
    milestones["enrolled"] = patient.enrolled_at
    milestones["collected"] = first(c.collected_at
                                    for c in identity.collections_of(session, patient.coi_id))
    bags_of: dict[str, list[str]] = {}
    for item in identity.items_of_coi(session, patient.coi_id):
        if item.kind == identity.ItemKind.FINAL_PRODUCT and item.batch_number:
            bags_of.setdefault(item.batch_number, []).append(item.item_id)
    infused = first_administrations(
        (patient.coi_id, number, _administered_at(session, bag))
        for number, bags in bags_of.items() for bag in bags).get(patient.coi_id)
    started = batches.batches_of_coi(session, patient.coi_id)
    batch = (batches.get_batch(session, infused[0]) if infused and infused[0]
             else (started[-1] if started else None))
    if batch is not None:
        milestones["batch_started"] = batch.started_at
        milestones["filled"] = _filled(session, batch.batch_number)
        milestones["released"] = _released(session, batch.batch_number)
        milestones.update(_bag_milestones(session, bags_of.get(batch.batch_number, [])))
    return Timeline(
        coi_id=patient.coi_id,
        batch_number=batch.batch_number if batch else None,
        process_code=batch.process_code if batch else None,
        process_version=batch.process_version if batch else None,
        batch_status=batch.status if batch else None,
        milestones=milestones, durations=durations(milestones))


def _administered_at(session: Session, bag: str) -> datetime | None:
    administration = identity.administration_of(session, bag)
    return administration.administered_at if administration else None
