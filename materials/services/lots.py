"""Lots: receipt into quarantine, QA's signed release or rejection, the lot and its uses.

Every lot starts in ``quarantine``; only QA decides it, with an e-signature (meaning
``released`` or ``rejected``), and never the person who received it (segregation of
duties: EU GMP Part I 5.35, the material is checked by someone other than who took it in).
A decided lot is not decided again (409 ``invalid_transition``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import labels.services as labels
from gmp_mes.audit import format_time
from gmp_mes.clock import utcnow
from gmp_mes.db import lock_rows
from gmp_mes.errors import InvalidTransition, SegregationOfDuties, field_error
from gmp_mes.models import Meaning, Signature, User
from gmp_mes.signatures import SignatureInput, sign
from materials.models import LotCounter, LotStatus, LotUse, MaterialLot
from materials.services._common import field_quantity, get_lot, show
from materials.services.master import get_material


def _next_lot_id(session: Session) -> str:
    """``LOT-`` and the next number, from the one counter row, locked until commit (two
    receipts at once on PostgreSQL never take the same number)."""
    counter = session.scalar(lock_rows(select(LotCounter).where(LotCounter.name == "lot"),
                                       LotCounter))
    if counter is None:  # a database made before the seed row (never by the migration)
        counter = LotCounter(name="lot", last_value=0)
        session.add(counter)
    counter.last_value += 1
    return f"LOT-{counter.last_value:06d}"


def receive_lot(
    session: Session, material_code: str, *, supplier: str, supplier_lot: str,
    expires_at: datetime, quantity: object, coa_reference: str | None = None, user_id: int,
) -> MaterialLot:
    """A lot received (operator, qc, qa at the edge): in quarantine, all of it remaining,
    at the receiving user's site."""
    material = get_material(session, material_code)
    if not (supplier or "").strip():
        raise field_error("supplier", "must not be empty")
    if not (supplier_lot or "").strip():
        raise field_error("supplier_lot", "must not be empty")
    if expires_at.tzinfo is None:
        raise field_error("expires_at", "needs a time zone offset (e.g. Z)")
    if expires_at <= utcnow():
        raise field_error("expires_at", "the lot has expired already: it cannot be received")
    amount = field_quantity(quantity)
    user = session.get(User, user_id)
    lot = MaterialLot(
        lot_id=_next_lot_id(session), material_code=material.code, supplier=supplier.strip(),
        supplier_lot=supplier_lot.strip(), expires_at=expires_at, quantity=amount,
        remaining=amount, status=LotStatus.QUARANTINE.value,
        coa_reference=(coa_reference or "").strip() or None,
        site_code=user.site.code if user is not None and user.site is not None else None,
        received_by=user_id, received_at=utcnow(),
    )
    session.add(lot)
    session.flush()
    return lot


def decision_content(lot: MaterialLot, decision: str, reason: str | None) -> dict[str, Any]:
    """What QA's signature binds (21 CFR 11.70): the lot's identity and the decision."""
    return {"lot_id": lot.lot_id, "material": lot.material_code, "supplier": lot.supplier,
            "supplier_lot": lot.supplier_lot, "expires_at": format_time(lot.expires_at),
            "quantity": show(lot.quantity), "coa_reference": lot.coa_reference,
            "decision": decision, "reason": reason}


def _decide(session: Session, lot_id: str, *, user_id: int, signature: SignatureInput,
            status: LotStatus, reason: str | None) -> MaterialLot:
    lot = get_lot(session, lot_id, for_update=True)
    if lot.status != LotStatus.QUARANTINE.value:
        raise InvalidTransition(f"lot {lot.lot_id} is {lot.status}: only a lot in quarantine "
                                "is released or rejected")
    if status == LotStatus.RELEASED and lot.received_by == user_id:
        raise SegregationOfDuties(f"you received lot {lot.lot_id}: another QA user releases it")
    user = session.get(User, user_id)
    assert user is not None  # the edge authenticated this user
    meaning = Meaning.RELEASED if status == LotStatus.RELEASED else Meaning.REJECTED
    signed = sign(session, user, signature, entity_type="material_lot", entity_id=lot.lot_id,
                  content=decision_content(lot, status.value, reason),
                  meanings={meaning.value})
    lot.status = status.value
    lot.decided_by = user_id
    lot.decided_at = signed.signed_at
    lot.decision_signature_id = signed.id
    lot.reject_reason = reason
    session.flush()
    return lot


def release_lot(session: Session, lot_id: str, *, user_id: int,
                signature: SignatureInput) -> MaterialLot:
    """QA releases a lot in quarantine (meaning ``released``), not the one who received it."""
    return _decide(session, lot_id, user_id=user_id, signature=signature,
                   status=LotStatus.RELEASED, reason=None)


def reject_lot(session: Session, lot_id: str, *, user_id: int, signature: SignatureInput,
               reason: str) -> MaterialLot:
    """QA rejects a lot in quarantine (meaning ``rejected``) with a reason."""
    if not (reason or "").strip():
        raise field_error("reason", "a rejection needs a reason")
    return _decide(session, lot_id, user_id=user_id, signature=signature,
                   status=LotStatus.REJECTED, reason=reason.strip())


@dataclass(frozen=True)
class LotUseView:
    """One use of a lot: batch, step, quantity, who and when."""

    use: LotUse
    username: str

    @property
    def batch_number(self) -> str:
        return self.use.batch_number


@dataclass(frozen=True)
class LotView:
    """A lot with who received and decided it, its decision signature and every use."""

    lot: MaterialLot
    received_by: str
    decided_by: str | None
    signature: Signature | None
    uses: list[LotUseView]
    labels: list[labels.AssetLabelRecord]  # every printed copy of its label, newest first


def lot_view(session: Session, lot_id: str) -> LotView:
    lot = get_lot(session, lot_id)
    rows = session.execute(
        select(LotUse, User.username).join(User, User.id == LotUse.used_by)
        .where(LotUse.lot_id == lot.lot_id).order_by(LotUse.id)
    ).all()
    names: dict[int, str] = {row.id: row.username for row in session.execute(
        select(User.id, User.username).where(
            User.id.in_([i for i in (lot.received_by, lot.decided_by) if i is not None])))}
    return LotView(lot=lot, received_by=names.get(lot.received_by, "?"),
                   decided_by=names.get(lot.decided_by) if lot.decided_by else None,
                   signature=lot.decision_signature,
                   uses=[LotUseView(use, username) for use, username in rows],
                   labels=labels.asset_labels_of(session, "LOT", lot.lot_id))


def lots_of_material(session: Session, material_code: str) -> list[MaterialLot]:
    """The lots of a material, newest first."""
    material = get_material(session, material_code)
    return list(session.scalars(select(MaterialLot)
                                .where(MaterialLot.material_code == material.code)
                                .order_by(MaterialLot.lot_id.desc())))


def recent_lots(session: Session, limit: int = 200, offset: int = 0) -> list[MaterialLot]:
    """The lots of every material, newest first, a page at a time (the materials page)."""
    return list(session.scalars(select(MaterialLot).order_by(MaterialLot.lot_id.desc())
                                .limit(limit).offset(offset)))


def decidable(lot: MaterialLot) -> bool:
    """QA may still release or reject it (the lot page offers the forms)."""
    return lot.status == LotStatus.QUARANTINE.value


@dataclass(frozen=True)
class LotsToHandle:
    """The site's lots someone must act on: waiting for QA's decision, and released lots
    with stock left that expire soon (the dashboard)."""

    awaiting_release: list[MaterialLot]
    expiring: list[MaterialLot]


def lots_to_handle(session: Session, site_code: str, *,
                   within: timedelta = timedelta(days=30), limit: int = 20) -> LotsToHandle:
    """Quarantined lots of the site, oldest first, and released lots with stock left
    expiring within ``within``, soonest first (each list at most ``limit``)."""
    at_site = MaterialLot.site_code == site_code
    waiting = session.scalars(
        select(MaterialLot).where(at_site, MaterialLot.status == LotStatus.QUARANTINE.value)
        .order_by(MaterialLot.received_at).limit(limit))
    now = utcnow()
    expiring = session.scalars(
        select(MaterialLot).where(at_site, MaterialLot.status == LotStatus.RELEASED.value,
                                  MaterialLot.remaining > 0,
                                  MaterialLot.expires_at <= now + within)
        .order_by(MaterialLot.expires_at).limit(limit))
    return LotsToHandle(list(waiting), list(expiring))
