"""What materials answers through the seams of gmp_mes.registry: the lots a batch used
(the executed batch record's "materials" section: backward traceability, EU ATMP
Regulation Art. 15) and what a scanned LOT label names (the scan station)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

import labels.services as labels
from gmp_mes.audit import format_time
from gmp_mes.clock import utcnow
from gmp_mes.localtime import in_utc, local_and_utc, zone
from gmp_mes.models import Site, User
from gmp_mes.registry import Reason, RecordSection, RecordTable, ScannedSubject
from labels.services import AssetLabel
from materials.models import LotStatus, LotUse, MaterialLot
from materials.services._common import LOT_ID, get_lot, show


@dataclass(frozen=True)
class BatchLotUse:
    """A use of a lot by a batch, with the lot's facts as the record shows them."""

    use: LotUse
    lot: MaterialLot
    username: str
    timezone: str

    @property
    def quantity(self) -> Decimal:
        return self.use.quantity


def uses_of_batch(session: Session, batch_number: str) -> list[BatchLotUse]:
    """Every lot use of a batch, in the order recorded."""
    rows = session.execute(
        select(LotUse, MaterialLot, User.username, Site.timezone)
        .join(MaterialLot, MaterialLot.lot_id == LotUse.lot_id)
        .join(User, User.id == LotUse.used_by)
        .join(Site, Site.id == User.site_id)
        .where(LotUse.batch_number == batch_number)
        .order_by(LotUse.id)
    ).all()
    return [BatchLotUse(use, lot, username, tz) for use, lot, username, tz in rows]


COLUMNS = ("Step", "Material", "Lot", "Supplier lot", "Expires", "Quantity", "By", "When")


def batch_record_sections(session: Session, batch_number: str) -> list[RecordSection]:
    """The "materials" section of the executed batch record (registry.batch_record_sections):
    ``data`` for the JSON export, a table for the page and the PDF."""
    uses = uses_of_batch(session, batch_number)
    data = [{"step_code": u.use.step_code, "step_record_id": u.use.step_record_id,
             "lot_id": u.lot.lot_id, "material": u.lot.material_code,
             "material_name": u.lot.material.name, "supplier": u.lot.supplier,
             "supplier_lot": u.lot.supplier_lot, "expires_at": format_time(u.lot.expires_at),
             "quantity": show(u.use.quantity), "unit": u.lot.material.unit,
             "used_by": u.username, "used_at": format_time(u.use.used_at)} for u in uses]
    rows = tuple(
        (u.use.step_code, f"{u.lot.material_code} · {u.lot.material.name}", u.lot.lot_id,
         f"{u.lot.supplier} {u.lot.supplier_lot}",
         local_and_utc(u.lot.expires_at, zone(u.timezone)),
         f"{show(u.use.quantity)} {u.lot.material.unit}", u.username,
         local_and_utc(u.use.used_at, zone(u.timezone)))
        for u in uses)
    return [RecordSection("materials", data,
                          RecordTable("Material lots used", COLUMNS, rows,
                                      empty="no material lot recorded"))]


def lot_fitness(lot: MaterialLot) -> list[Reason]:
    """Why a lot may not be used now (empty: fit for use), as the scan station shows."""
    reasons: list[Reason] = []
    if lot.status == LotStatus.REJECTED.value:
        reasons.append({"code": "lot_rejected",
                        "message": f"lot {lot.lot_id} was rejected by QA: do not use"})
    elif lot.status != LotStatus.RELEASED.value:
        reasons.append({"code": "lot_not_released",
                        "message": f"lot {lot.lot_id} is in {lot.status}: not released"})
    if lot.expires_at <= utcnow():
        reasons.append({"code": "lot_expired",
                        "message": f"lot {lot.lot_id} expired {in_utc(lot.expires_at)}"})
    if lot.remaining <= 0:
        reasons.append({"code": "lot_insufficient",
                        "message": f"lot {lot.lot_id} has nothing left"})
    return reasons


def scanned_lot(session: Session, kind_code: str, subject_id: str) -> ScannedSubject | None:
    """What a verified LOT label names (registry.scanned_subjects); None for other kinds
    and for a lot not on record."""
    if kind_code != "LOT" or not LOT_ID.fullmatch(subject_id):
        return None
    lot = session.get(MaterialLot, subject_id)
    if lot is None:
        return None  # the scan station says unknown_subject, as for any kind nobody knows
    return ScannedSubject(
        kind="lot", subject_id=lot.lot_id,
        title=f"{lot.material.name} ({lot.material_code}) lot {lot.lot_id}, "
              f"{show(lot.remaining)} {lot.material.unit} left",
        status=lot.status, expires_at=lot.expires_at, reasons=lot_fitness(lot),
        url=f"/lots/{lot.lot_id}")


def lot_label_subject(session: Session, lot_id: str, *, for_update: bool = False) -> AssetLabel:
    """What a lot's label shows and signs (kind ``LOT``, COI field ``-``, the lot's
    expiry). With ``for_update`` the lot row is locked first, until commit: two prints of
    one lot at once cannot both be the original or share a serial."""
    lot = get_lot(session, lot_id, for_update=for_update)
    site = session.scalar(select(Site).where(Site.code == lot.site_code)) if lot.site_code \
        else None
    return AssetLabel(
        kind_code="LOT", subject_id=lot.lot_id, title="MATERIAL LOT",
        lines=(f"{lot.material_code} {lot.material.name}"[:60],
               f"SUPPLIER {lot.supplier} LOT {lot.supplier_lot}"[:60],
               f"{show(lot.quantity)} {lot.material.unit}"
               + (f" - {lot.material.storage}" if lot.material.storage else "")),
        expires_at=lot.expires_at, site_code=lot.site_code,
        site_timezone=site.timezone if site is not None else "UTC")


def print_lot_label(session: Session, subject: AssetLabel, request: labels.PrintRequest, *,
                    user_id: int) -> labels.PrintedLabel:
    """Record and render the lot's label (the caller locked the lot: lot_label_subject)."""
    return labels.print_asset_label(session, subject, request, user_id=user_id)


def preview_lot_label(session: Session, subject: AssetLabel,
                      request: labels.PrintRequest) -> labels.PrintedLabel:
    """A marked PREVIEW of the lot's label: records nothing, never verifies."""
    return labels.preview_asset_label(session, subject, request)


def labels_of_lot(session: Session, lot_id: str) -> list[labels.AssetLabelRecord]:
    """Every printed copy of the lot's label, newest first."""
    return labels.asset_labels_of(session, "LOT", lot_id)
