"""The step check (SPEC §11): the lots a step uses, checked against what it declares, and
their consumption when it is recorded (``registry.step_requirements``, materials' answer).

Every reason is collected, never only the first: ``material_missing``,
``lot_not_released``, ``lot_expired``, ``lot_wrong_material``, ``lot_insufficient``, and
the gmp-mes extensions ``lot_unknown``, ``lot_other_site``, ``quantity_missing`` and
``quantity_invalid``; a
scanned label that does not verify is refused with the label check's own code
(``malformed``, ``bad_signature``, ``voided``, ``unknown_copy``). When the step is being
recorded the lot rows are locked first, in ``lot_id`` order, before ``remaining`` is
read: twenty steps taking the last vials at once never take more than there is (the
CHECK ``remaining >= 0`` backs it), and no two steps lock two lots in opposite orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

import labels.services as labels
from gmp_mes.audit import format_time
from gmp_mes.db import lock_rows
from gmp_mes.localtime import in_utc
from gmp_mes.registry import Reason, StepCheck, StepContext
from materials.models import LotStatus, LotUse, MaterialLot
from materials.services._common import LOT_ID, QuantityInvalid, exact, show, stored

LOT_KIND = "LOT"  # the payload kind of a lot label (SPEC §11)


def resolve_lot_ref(session: Session, text: str) -> tuple[str | None, Reason | None]:
    """A lot id, or a scanned LOT label (checked online like any label: signature,
    recorded copy, not voided), as ``(lot_id, None)``; ``(None, reason)`` otherwise."""
    raw = (text or "").strip()
    if LOT_ID.fullmatch(raw.upper()):
        return raw.upper(), None
    check = labels.check_payload(session, raw)
    if not check.ok:
        code, message = check.reasons[0]
        return None, {"code": code, "message": f"lot label {raw[:40]!r}: {message}"}
    assert check.payload is not None  # a label that verified was parsed
    if check.payload.kind_code != LOT_KIND:
        return None, {"code": "lot_unknown",
                      "message": f"the label scanned names {check.payload.subject_id}, "
                                 "not a material lot"}
    return check.payload.subject_id, None


@dataclass
class _Taken:
    """What the step takes from one lot (several entries of one lot add up)."""

    lot: MaterialLot
    quantity: Decimal = Decimal(0)
    entries: int = 0


@dataclass
class _Check:
    reasons: list[Reason] = field(default_factory=list)

    def add(self, code: str, message: str) -> None:
        self.reasons.append({"code": code, "message": message})


# Built once: every step that uses a material reads its lots (locked, when recording,
# in lot_id order: no two steps lock two lots in opposite orders).
_LOTS = (select(MaterialLot).where(MaterialLot.lot_id.in_(bindparam("ids", expanding=True)))
         .order_by(MaterialLot.lot_id))
_LOCKED_LOTS = lock_rows(_LOTS, MaterialLot)


def check_step_materials(session: Session, ctx: StepContext) -> StepCheck:
    """Materials' answer to ``registry.step_requirements``: reasons, the signed list of
    lots used, and ``apply`` (consume, record each use) for when the step is recorded."""
    if not ctx.needs.materials and not ctx.given.materials:
        return StepCheck()  # every step asks: nothing to read when it uses no material
    check = _Check()
    declared = {need.material: need for need in ctx.needs.materials}
    refs: list[tuple[str | None, object]] = []
    for entry in ctx.given.materials:
        lot_id, problem = resolve_lot_ref(session, entry.lot)
        if problem is not None:
            check.reasons.append(problem)
        refs.append((lot_id, entry.quantity))
    ids = sorted({lot_id for lot_id, _ in refs if lot_id is not None})
    statement = _LOCKED_LOTS if ctx.recording else _LOTS
    lots = ({lot.lot_id: lot for lot in session.scalars(statement, {"ids": ids})}
            if ids else {})

    taken: dict[str, _Taken] = {}
    materials_given: set[str] = set()
    for lot_id, given_quantity in refs:
        if lot_id is None:
            continue
        lot = lots.get(lot_id)
        if lot is None:
            check.add("lot_unknown", f"there is no material lot {lot_id}")
            continue
        materials_given.add(lot.material_code)
        need = declared.get(lot.material_code)
        if need is None:
            check.add("lot_wrong_material",
                      f"lot {lot.lot_id} is {lot.material_code}, which step {ctx.step_code} "
                      f"does not use (it uses {', '.join(sorted(declared)) or 'no material'})")
            continue
        raw = given_quantity if given_quantity is not None else need.quantity
        if raw is None:
            check.add("quantity_missing",
                      f"lot {lot.lot_id}: enter the quantity of {lot.material_code} used "
                      f"(in {lot.material.unit}); the step declares none")
            continue
        try:
            amount = exact(raw)
        except QuantityInvalid as exc:
            check.add("quantity_invalid", f"lot {lot.lot_id}: the quantity {exc}")
            continue
        slot = taken.setdefault(lot.lot_id, _Taken(lot))
        slot.quantity += amount
        slot.entries += 1

    for lot_id in sorted(lots):
        lot = lots[lot_id]
        if lot.material_code not in declared:
            continue  # reported above, once per entry
        if ctx.site_code is not None and lot.site_code not in (None, ctx.site_code):
            # A lot is where it was received: a step at another site cannot have used it.
            check.add("lot_other_site",
                      f"lot {lot.lot_id} ({lot.material_code}) is at site {lot.site_code}, "
                      f"not at {ctx.site_code} where the step is recorded")
        if lot.status != LotStatus.RELEASED.value:
            check.add("lot_not_released",
                      f"lot {lot.lot_id} ({lot.material_code}) is {lot.status}: only a lot "
                      "QA released may be used")
        if lot.expires_at <= ctx.at:
            check.add("lot_expired", f"lot {lot.lot_id} ({lot.material_code}) expired "
                                     f"{in_utc(lot.expires_at)}")
        taking = taken.get(lot_id)
        if taking is not None and taking.quantity > lot.remaining:
            check.add("lot_insufficient",
                      f"lot {lot.lot_id} ({lot.material_code}) has {show(lot.remaining)} "
                      f"{lot.material.unit} left; the step uses {show(taking.quantity)}")
    for code in declared:
        if code not in materials_given:
            check.add("material_missing",
                      f"step {ctx.step_code} uses {code}: give the lot used (scan its label "
                      "or enter its lot id)")

    used = [taken[lot_id] for lot_id in sorted(taken)]
    # ``label``: how the batch record's PDF names each use.
    signed = [{"label": f"{t.lot.lot_id} {t.lot.material_code} {show(t.quantity)} "
                        f"{t.lot.material.unit}",
               "lot_id": t.lot.lot_id, "material": t.lot.material_code,
               "supplier_lot": t.lot.supplier_lot,
               "expires_at": format_time(t.lot.expires_at),
               "quantity": show(t.quantity), "unit": t.lot.material.unit} for t in used]

    def apply(session: Session, step_record_id: int) -> None:
        """Consume and record each use, in the step's transaction (rows locked above;
        the step's own flush writes them)."""
        for t in used:
            t.lot.remaining = stored(t.lot.remaining - t.quantity)
            session.add(LotUse(
                lot_id=t.lot.lot_id, material_code=t.lot.material_code,
                batch_number=ctx.batch_number, coi_id=ctx.coi_id,
                step_record_id=step_record_id, step_code=ctx.step_code,
                quantity=t.quantity, used_by=ctx.performer_id, used_at=ctx.at))

    return StepCheck(reasons=check.reasons, signed=signed,
                     apply=None if check.reasons else apply)
