"""Scans: a scanned label checked against the item and, optionally, a batch (SPEC §7)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

import labels.services as labels
from gmp_mes import audit, registry
from gmp_mes.accounts import Person
from gmp_mes.clock import utcnow
from gmp_mes.errors import CoiMismatch, conflict
from gmp_mes.registry import ScannedSubject
from identity.models import CustodyAction, Item, ItemKind, ItemStatus
from identity.services._common import (
    _custody,
    _forged_alert,
    _item_holds,
    _item_problems,
    _item_row,
    _r,
)
from identity.services.lookup import get_item, printable
from identity.services.rules import FINAL_STATUSES, KIND_CODES, ItemFacts

S = ItemStatus


@dataclass
class ScanResult:
    ok: bool
    item: ItemFacts | None
    coi_id: str | None
    status: str | None
    expires_at: datetime | None
    reasons: list[dict[str, str]] = field(default_factory=list)
    batch_number: str | None = None
    event_id: int | None = None  # the custody event recording the scan
    # A verified label of something that is no item (a material lot, equipment: SPEC §11)
    # as its domain answers it; None for an item's label.
    subject: ScannedSubject | None = None


def scan(
    session: Session,
    raw: str,
    *,
    user: Person,
    site_code: str | None,
    workstation: str | None = None,
    batch_number: str | None = None,
) -> ScanResult:
    """Check one scanned label and record the scan, refused or not (SPEC §7 /scans)."""
    now = utcnow()
    check = labels.check_payload(session, raw)
    reasons = [_r(code, message) for code, message in check.reasons]
    payload = check.payload
    if payload is not None and payload.asset:
        return _scan_asset(session, raw, payload, reasons, site_code=site_code,
                           workstation=workstation, batch_number=batch_number)
    item = None
    if payload is not None:
        item = _item_row(session, payload.subject_id)
        if item is None:
            reasons.append(_r("unknown_item", f"no item {payload.subject_id} is on record"))
    trusted = payload is not None and not any(
        r["code"] in ("malformed", "bad_signature") for r in reasons
    )
    if item is not None and trusted:
        assert payload is not None
        if payload.coi_id != item.coi_id:
            reasons.append(_r("coi_mismatch", f"the label says COI {payload.coi_id}, the item "
                                              f"belongs to {item.coi_id}"))
        if payload.kind_code != KIND_CODES[ItemKind(item.kind)]:
            reasons.append(_r("label_mismatch", f"the label is for a {payload.kind_code}, the "
                                                f"item is a {item.kind}"))
        reasons.extend(_item_problems(item, now))
        reasons.extend(_item_holds(session, item.item_id))  # SPEC §14: e.g. an excursion
        if item.status in FINAL_STATUSES - {S.EXPIRED}:
            reasons.append(_r("status_final", f"item {item.item_id} is {item.status}; it must "
                                              "not be used"))
        if batch_number:
            reasons.extend(_batch_check(session, item, batch_number))
    for r in reasons:
        if r["code"] in ("bad_signature", "voided"):
            text = payload.text if payload is not None else labels.normalise_scan(raw)
            _forged_alert(session, text, r["code"], r["message"], site_code, workstation,
                          payload.subject_id if payload is not None else "unknown")
    ok = not reasons
    detail: dict[str, object] = {"reasons": reasons}
    if batch_number:
        detail["batch_number"] = batch_number
    event_id = None
    if item is not None:
        event_id = _custody(session, item, CustodyAction.SCAN, site_code=site_code,
                            location=item.location, workstation=workstation, ok=ok,
                            flagged=not ok, detail=detail).id
    else:
        # No item to hang a custody event on: the refused scan is an audit event.
        text = labels.normalise_scan(raw) if isinstance(raw, str) else ""
        audit.record(session, "scan.refused", "scan", printable(workstation or "-", 80),
                     new={"payload": printable(text), "site": site_code, "reasons": reasons})
    session.flush()
    shown = item if trusted else None
    return ScanResult(
        ok=ok, item=shown,
        coi_id=shown.coi_id if shown else None,
        status=shown.status if shown else None,
        expires_at=shown.expires_at if shown else None,
        reasons=reasons, batch_number=batch_number, event_id=event_id,
    )


def scanned_subject(session: Session, kind_code: str, subject_id: str) -> ScannedSubject | None:
    """What the domains above say a LOT or EQP label names (``registry.scanned_subjects``:
    materials, equipment); the first that knows it answers, None when none does."""
    for provider in registry.scanned_subjects.providers():
        found = provider(session, kind_code, subject_id)
        if found is not None:
            return found
    return None


def not_an_item(payload: labels.LabelPayload) -> dict[str, str]:
    """The reason a LOT or EQP label is refused where a patient's item is scanned (a
    step's identity scan, a label check, a batch check, the bedside)."""
    what = labels.ASSET_KINDS[payload.kind_code]
    return _r("not_an_item", f"this is the label of {what} {payload.subject_id}, not of a "
                             "patient's bag or item: scan the item's own label (lots and "
                             "equipment are given in a step's materials and equipment)")


def _scan_asset(
    session: Session,
    raw: str,
    payload: labels.LabelPayload,
    reasons: list[dict[str, str]],
    *,
    site_code: str | None,
    workstation: str | None,
    batch_number: str | None,
) -> ScanResult:
    """A LOT or EQP label at the scan station (SPEC §11): no item, the subject as the
    domain that keeps it answers (``unknown_subject`` when none does); recorded in the
    audit trail like a refused item scan."""
    trusted = not any(r["code"] in ("malformed", "bad_signature") for r in reasons)
    subject = scanned_subject(session, payload.kind_code, payload.subject_id) if trusted else None
    if trusted and subject is None:
        reasons.append(_r("unknown_subject", f"no {labels.ASSET_KINDS[payload.kind_code]} "
                                             f"{payload.subject_id} is on record"))
    if subject is not None:
        reasons.extend(subject.reasons)
    if batch_number:
        # A check against a batch asks whether this is the batch's patient material.
        reasons.append(not_an_item(payload))
    for r in reasons:
        if r["code"] in ("bad_signature", "voided"):
            _forged_alert(session, payload.text, r["code"], r["message"], site_code, workstation,
                          payload.subject_id)
    ok = not reasons
    new: dict[str, object] = {
        "kind_code": payload.kind_code, "subject_id": payload.subject_id,
        "serial": payload.serial, "site": site_code,
        "workstation": printable(workstation, 100) if workstation else None,
        "ok": ok, "reasons": reasons,
        "status": subject.status if subject is not None else None,
    }
    if batch_number:
        new["batch_number"] = batch_number
    if not trusted:
        new["payload"] = printable(labels.normalise_scan(raw))
    audit.record(session, "scan" if ok else "scan.refused", "scan", payload.subject_id, new=new)
    session.flush()
    return ScanResult(
        ok=ok, item=None, coi_id=None,
        status=subject.status if subject is not None else None,
        expires_at=subject.expires_at if subject is not None else None,
        reasons=reasons, batch_number=batch_number, subject=subject,
    )


def batch_starting_material(session: Session, batch_number: str) -> tuple[str, str] | None:
    """``(item_id, coi_id)`` of the starting material a batch started from, from identity's
    own records: batch start marks it with the batch number (:func:`start_processing`) and
    nothing ever clears it. ``None``: no batch of that number was started."""
    row = session.execute(
        select(Item.item_id, Item.coi_id)
        .where(Item.batch_number == batch_number, Item.kind == ItemKind.STARTING_MATERIAL)
        .limit(1)
    ).first()
    return None if row is None else (row.item_id, row.coi_id)


def _batch_check(session: Session, item: ItemFacts, batch_number: str) -> list[dict[str, str]]:
    started = batch_starting_material(session, batch_number)
    if started is None:
        return [_r("unknown_batch", f"no batch {batch_number}")]
    starting, batch_coi = started
    if batch_coi != item.coi_id:
        return [_r("coi_mismatch", f"item {item.item_id} belongs to COI {item.coi_id}, batch "
                                   f"{batch_number} to COI {batch_coi}: wrong patient")]
    # Same patient, but is it this batch's material? Starting material belongs to the
    # batch it started (in_process until the step that consumes it); an item made by or
    # feeding another batch is not this batch's.
    if item.kind == ItemKind.STARTING_MATERIAL and item.item_id != starting:
        feeds = f"batch {item.batch_number}" if item.batch_number else "no batch yet"
        return [_r("wrong_batch", f"starting material {item.item_id} is not the starting "
                                  f"material of batch {batch_number} ({starting}); it "
                                  f"belongs to {feeds}")]
    if (item.kind != ItemKind.STARTING_MATERIAL and item.batch_number
            and item.batch_number != batch_number):
        return [_r("wrong_batch", f"item {item.item_id} belongs to batch {item.batch_number}, "
                                  f"not to batch {batch_number}")]
    return []


def resolve_item_ref(session: Session, ref: str, *, field_name: str = "item_id") -> str:
    """An item id, or a scanned label payload (SPEC §11: a payload is accepted wherever an
    id is): the payload's signature is verified online (not voided) and its COI and kind
    must be the item's. Returns the item id; 409 with the label's reason code otherwise."""
    text = labels.normalise_scan(ref) if isinstance(ref, str) else ""
    if not text.startswith("GMP1:"):
        return text.strip().upper()
    check = labels.check_payload(session, text)
    if check.reasons or check.payload is None:
        code, message = check.reasons[0] if check.reasons else ("malformed", "not a label")
        raise conflict(code, f"{field_name}: the scanned label is refused: {message}",
                       extra={"reasons": [_r(c, m) for c, m in check.reasons]})
    payload = check.payload
    if payload.asset:
        reason = not_an_item(payload)
        raise conflict(reason["code"], f"{field_name}: {reason['message']}",
                       extra={"reasons": [reason]})
    item = get_item(session, payload.subject_id)
    if payload.coi_id != item.coi_id:
        raise CoiMismatch(f"the label says COI {payload.coi_id}, item {item.item_id} belongs "
                          f"to {item.coi_id}")
    if payload.kind_code != KIND_CODES[ItemKind(item.kind)]:
        raise conflict("label_mismatch", f"the label is for a {payload.kind_code}, item "
                                         f"{item.item_id} is a {item.kind}")
    return item.item_id
