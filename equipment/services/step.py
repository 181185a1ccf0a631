"""The equipment check at a step (SPEC §11; 21 CFR 211.182, 211.67, 211.68), provided to
batches through ``gmp_mes.registry.step_requirements``.

Every reason is collected, none stops the others: ``equipment_missing`` (a declared type
has no equipment given), ``equipment_wrong_type`` (equipment of a type the step does not
declare), ``equipment_out_of_service``, ``calibration_overdue`` (at the step's time),
``cleaning_required`` (cleaning-required equipment used by another batch since its last
cleaning: the same batch using it again, the daily count on one incubator, is fine), and,
as an extension, ``equipment_unknown`` and the label check's own codes for a scanned
payload that is not a valid EQP label (``malformed``, ``bad_signature``, ``voided``, ...).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.orm import Session, lazyload

from equipment.models import Equipment, EquipmentUse
from equipment.services._common import normal_id
from equipment.services.status import NOTHING_LOGGED, Standing, standings, unfit_reasons
from gmp_mes.audit import format_time
from gmp_mes.db import lock_rows
from gmp_mes.registry import Reason, StepCheck, StepContext
from labels import services as labels

EQUIPMENT_KIND_CODE = "EQP"
# The order reasons are listed in (the first is the refusal's code): what was given cannot
# be read, then what is missing, then what is wrong with what was given.
REASON_ORDER = ("equipment_unknown", "equipment_missing", "equipment_wrong_type",
                "equipment_other_site", "equipment_out_of_service", "calibration_overdue",
                "cleaning_required")


@dataclass(frozen=True)
class Resolved:
    """One entry of the step body's ``equipment``: the id it names, or why it names none."""

    equipment_id: str | None
    reasons: list[Reason]


def resolve_equipment_ref(session: Session, text: str) -> Resolved:
    """An equipment id as typed, or a scanned EQP label payload (checked online: signature,
    recorded copy, not voided; refused with the label check's code)."""
    scanned = labels.normalise_scan(text)
    if ":" not in scanned:  # an id has no colon; anything with one is read as a label
        return Resolved(normal_id(text), [])
    check = labels.check_payload(session, scanned)
    if not check.ok:
        return Resolved(None, [{"code": code, "message": f"scanned equipment label: {message}"}
                               for code, message in check.reasons])
    assert check.payload is not None
    if check.payload.kind_code != EQUIPMENT_KIND_CODE:
        return Resolved(None, [{"code": "equipment_unknown", "message":
                                f"the label scanned is a {check.payload.kind_code} label of "
                                f"{check.payload.subject_id}, not an equipment label"}])
    return Resolved(check.payload.subject_id, [])


# Built once: the check runs on every step that uses equipment. Who registered the
# equipment is not needed here: not joined (nor their roles loaded).
_BY_IDS = (select(Equipment).options(lazyload(Equipment.creator))
           .where(Equipment.equipment_id.in_(bindparam("ids", expanding=True)))
           .order_by(Equipment.equipment_id))
_LOCKED_BY_IDS = lock_rows(_BY_IDS, Equipment)


def _used_by_other_batch(session: Session, found: dict[str, Equipment],
                         logged: dict[str, Standing], batch_number: str) -> dict[str, str]:
    """Cleaning-required equipment used by another batch since its last cleaning: id ->
    that batch (one query for all). A use at the very time of the cleaning counts as
    after it: the cleaning must be shown to come later (21 CFR 211.67)."""
    terms = []
    for equipment_id, equipment in found.items():
        if not equipment.cleaning_required:
            continue
        cleaned_at = logged.get(equipment_id, NOTHING_LOGGED).last_cleaned_at
        term = EquipmentUse.equipment_id == equipment_id
        terms.append(and_(term, EquipmentUse.used_at >= cleaned_at) if cleaned_at else term)
    if not terms:
        return {}
    rows = session.execute(
        select(EquipmentUse.equipment_id, EquipmentUse.batch_number)
        .where(or_(*terms), EquipmentUse.batch_number != batch_number)
        .order_by(EquipmentUse.id.desc()))
    other: dict[str, str] = {}
    for equipment_id, other_batch in rows:
        other.setdefault(equipment_id, other_batch)
    return other


def check_step_equipment(session: Session, ctx: StepContext) -> StepCheck:
    """The equipment part of a step's check (``registry.step_requirements``)."""
    declared = [need.type for need in ctx.needs.equipment]
    if not declared and not ctx.given.equipment:
        return StepCheck()  # runs on every step: nothing to read
    by_code: dict[str, list[Reason]] = {code: [] for code in REASON_ORDER}
    other: list[Reason] = []  # the label check's codes (malformed, voided...) come first

    def add(reason: Reason) -> None:
        by_code.get(reason["code"], other).append(reason)

    ids: list[str] = []
    for text in ctx.given.equipment:
        resolved = resolve_equipment_ref(session, text)
        for reason in resolved.reasons:
            add(reason)
        if resolved.equipment_id is not None and resolved.equipment_id not in ids:
            ids.append(resolved.equipment_id)
    # Locked in id order until commit when recording: two batches cannot both take a
    # cabinet that needs cleaning, nor use one while it is taken out of service.
    statement = _LOCKED_BY_IDS if ctx.recording else _BY_IDS
    found = ({row.equipment_id: row for row in session.scalars(statement, {"ids": ids})}
             if ids else {})
    for equipment_id in ids:
        if equipment_id not in found:
            add({"code": "equipment_unknown", "message": f"no equipment {equipment_id}"})
    given = [found[equipment_id] for equipment_id in ids if equipment_id in found]
    have = Counter(equipment.type for equipment in given)
    for type_, wanted in sorted(Counter(declared).items()):
        if have[type_] < wanted:
            count = f"{wanted} " if wanted > 1 else ""
            add({"code": "equipment_missing",
                 "message": f"step {ctx.step_code} needs {count}{type_.replace('_', ' ')} "
                            f"({type_}); {have[type_] or 'none'} given"})
    logged = standings(session, [equipment.equipment_id for equipment in given])
    dirty = _used_by_other_batch(session, found, logged, ctx.batch_number)
    for equipment in given:
        if equipment.type not in declared:
            wanted_types = ", ".join(sorted(set(declared))) or "no equipment"
            add({"code": "equipment_wrong_type",
                 "message": f"equipment {equipment.equipment_id} is a {equipment.type}; step "
                            f"{ctx.step_code} uses {wanted_types}"})
        if ctx.site_code is not None and equipment.site_code != ctx.site_code:
            # Equipment stays where it is registered: a step at another site cannot be
            # performed on it (a typed or scanned id from the wrong plant).
            add({"code": "equipment_other_site",
                 "message": f"equipment {equipment.equipment_id} is at site "
                            f"{equipment.site_code}, not at {ctx.site_code} where the step "
                            "is recorded"})
        standing = logged.get(equipment.equipment_id, NOTHING_LOGGED)
        for reason in unfit_reasons(equipment.equipment_id, standing,
                                    equipment.calibration_interval, ctx.at):
            add(reason)
        if equipment.equipment_id in dirty:
            add({"code": "cleaning_required",
                 "message": f"equipment {equipment.equipment_id} was used by batch "
                            f"{dirty[equipment.equipment_id]} and has not been cleaned since"})
    reasons = other + [reason for code in REASON_ORDER for reason in by_code[code]]
    signed = [{
        "equipment_id": equipment.equipment_id, "type": equipment.type, "name": equipment.name,
        "calibration_valid_until": _time(logged.get(equipment.equipment_id, NOTHING_LOGGED)),
    } for equipment in given]
    used = [equipment.equipment_id for equipment in given]

    def apply(session: Session, step_record_id: int) -> None:
        """The equipment use log (21 CFR 211.182): one row per equipment, same transaction
        (the step's own flush writes them)."""
        for equipment_id in used:
            session.add(EquipmentUse(
                equipment_id=equipment_id, batch_number=ctx.batch_number, coi_id=ctx.coi_id,
                step_record_id=step_record_id, step_code=ctx.step_code,
                used_by=ctx.performer_id, used_at=ctx.at))

    return StepCheck(reasons=reasons, signed=signed, apply=apply if used else None)


def _time(standing: Standing) -> str | None:
    valid_until = standing.calibration_valid_until
    return format_time(valid_until) if valid_until is not None else None


def uses_of_batch(session: Session, batch_number: str) -> list[EquipmentUse]:
    """Every use of equipment by a batch, oldest first (the batch record)."""
    return list(session.scalars(select(EquipmentUse)
                                .where(EquipmentUse.batch_number == batch_number)
                                .order_by(EquipmentUse.id)))
