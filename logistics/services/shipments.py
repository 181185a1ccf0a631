"""Shipments (SPEC §14): ship items together under a condition, upload the temperature
log, receive and reconcile at the destination, QA's disposition of a held shipment.

Every custody change goes through ``identity.services.record_custody`` (the one place
the custody rules live); logistics keeps what travelled together, the condition, the log
and the hold. The hold reaches identity's bedside check and scan station through the
``registry.item_holds`` seam (:func:`item_holds`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

import labels.services as labels
from gmp_mes import alerts, audit
from gmp_mes.accounts import Person
from gmp_mes.alerts import AlertSpec, raise_alert
from gmp_mes.clock import utcnow
from gmp_mes.db import lock_rows
from gmp_mes.errors import DomainError, Forbidden, NotFound, conflict, field_error
from gmp_mes.models import Meaning, Site, User
from gmp_mes.registry import Reason
from gmp_mes.signatures import SignatureInput, sign
from identity import services as identity
from logistics.models import (
    Decision,
    Hold,
    Shipment,
    ShipmentCounter,
    ShipmentItem,
    ShipmentReceipt,
    ShipmentStatus,
    TemperatureLog,
    TemperatureReading,
)
from logistics.services import templog
from logistics.services.templog import Readings

# Roles (SPEC §14): who ships and receives, who uploads a log, who decides.
SHIPPERS = ("operator", "clinician")
UPLOADERS = ("operator", "qc", "qa", "clinician")
# A shipment's condition is a range a cold chain can hold: colder than liquid nitrogen's
# boiling point (-196 °C) no shipper reaches, above 60 °C nothing of ours travels.
CONDITION_LOW, CONDITION_HIGH = -200.0, 60.0
ACCEPT_MEANINGS = {Meaning.APPROVED.value, Meaning.RELEASED.value}
REJECT_MEANINGS = {Meaning.REJECTED.value}
HOLD_ALERT_KINDS = (Hold.TEMPERATURE_EXCURSION.value, Hold.TEMPERATURE_UNKNOWN.value)


def _shipment_id(session: Session) -> str:
    counter = session.scalar(lock_rows(
        select(ShipmentCounter).where(ShipmentCounter.name == "shipment"), ShipmentCounter))
    if counter is None:
        counter = ShipmentCounter(name="shipment", last_value=0)
        session.add(counter)
    counter.last_value += 1
    return f"SHP-{counter.last_value:06d}"


def get_shipment(session: Session, shipment_id: str, *, for_update: bool = False) -> Shipment:
    key = (shipment_id or "").strip().upper()
    statement = select(Shipment).where(Shipment.shipment_id == key)
    shipment = session.scalar(lock_rows(statement, Shipment) if for_update else statement)
    if shipment is None:
        raise NotFound(f"no shipment {identity.printable(key, 40)!r}")
    return shipment


def _site_code(session: Session, code: str, field_name: str) -> str:
    text = (code or "").strip().upper()
    if session.scalar(select(Site.code).where(Site.code == text)) is None:
        raise field_error(field_name, f"no site with code {identity.printable(text, 40)!r}")
    return text


def _condition(min_c: float, max_c: float) -> None:
    for name, value in (("condition.min_c", min_c), ("condition.max_c", max_c)):
        if not math.isfinite(value) or not CONDITION_LOW <= value <= CONDITION_HIGH:
            raise field_error(name, f"must be between {CONDITION_LOW} and {CONDITION_HIGH} °C")
    if min_c >= max_c:
        raise field_error("condition.max_c", "must be above min_c")


def _named(error: DomainError, item_id: str) -> DomainError:
    """A custody refusal of one item refuses the whole shipment: say which item."""
    error.extra.setdefault("item_id", item_id)
    if item_id not in error.detail:
        error.detail = f"item {item_id}: {error.detail}"
        error.args = (error.detail,)
    return error


def create_shipment(
    session: Session, *, items: Sequence[str], from_site: str, to_site: str, min_c: float,
    max_c: float, user: Person, shipper_id: str | None = None, logger_id: str | None = None,
    courier: str | None = None,
) -> Shipment:
    """Ship ``items`` (ids or scanned labels) from ``from_site`` to ``to_site`` under the
    condition ``[min_c, max_c]`` °C, in one transaction: each item is shipped by
    ``identity.services.record_custody`` (``ship``) and any refusal refuses all (the
    request rolls back; nothing is shipped). The caller is a user of ``from_site`` (403
    ``site_mismatch``), every item is there (409 ``not_at_site``)."""
    origin = _site_code(session, from_site, "from_site")
    destination = _site_code(session, to_site, "to_site")
    if origin == destination:
        raise field_error("to_site", "the destination is the site the shipment leaves")
    _condition(min_c, max_c)
    if user.site.code != origin:
        error = Forbidden(f"a shipment from {origin} is recorded by a user of {origin} (you "
                          f"are a user of {user.site.code})")
        error.code = "site_mismatch"  # type: ignore[misc]
        raise error
    if not items:
        raise field_error("items", "name at least one item")
    ids: list[str] = []
    for n, ref in enumerate(items):
        try:
            ids.append(identity.resolve_item_ref(session, ref, field_name=f"items.{n}"))
        except DomainError as exc:
            raise _named(exc, identity.printable(str(ref), 40)) from None
    ids = sorted(set(ids))  # one lock order: item rows by id
    for item_id in ids:
        item = identity.get_item(session, item_id)
        if item.site_code != origin:
            raise conflict("not_at_site", f"item {item_id} is at {item.site_code}, not at "
                                          f"{origin}: a shipment leaves from where its items "
                                          "are", extra={"item_id": item_id})
    shipment = Shipment(
        shipment_id=_shipment_id(session), from_site=origin, to_site=destination,
        min_c=float(min_c), max_c=float(max_c), shipper_id=_clean(shipper_id),
        logger_id=_clean(logger_id), courier=_clean(courier),
        status=ShipmentStatus.IN_TRANSIT.value, shipped_by=user.id, shipped_at=utcnow())
    session.add(shipment)
    session.flush()
    for item_id in ids:
        try:
            identity.record_custody(session, item_id, action="ship", site=destination,
                                    user=user, workstation=f"shipment {shipment.shipment_id}")
        except DomainError as exc:
            raise _named(exc, item_id) from None
        session.add(ShipmentItem(shipment_id=shipment.shipment_id, item_id=item_id))
    session.flush()
    return shipment


def _clean(text: str | None) -> str | None:
    return text.strip() if text and text.strip() else None


def shipment_items(session: Session, shipment_id: str) -> list[ShipmentItem]:
    return list(session.scalars(select(ShipmentItem).where(
        ShipmentItem.shipment_id == shipment_id).order_by(ShipmentItem.item_id)))


def list_shipments(session: Session, *, limit: int, offset: int = 0,
                   site: str | None = None) -> list[Shipment]:
    """Newest first; with ``site``, those leaving or reaching it."""
    statement = select(Shipment)
    if site:
        statement = statement.where((Shipment.from_site == site) | (Shipment.to_site == site))
    return list(session.scalars(statement.order_by(Shipment.shipped_at.desc(),
                                                   Shipment.shipment_id.desc())
                                .limit(limit).offset(offset)))


# --- the temperature log ------------------------------------------------------------------

_READINGS = cast(Table, TemperatureReading.__table__)


def temperature_log(session: Session, shipment_id: str) -> TemperatureLog | None:
    return session.get(TemperatureLog, shipment_id)


def upload_log(session: Session, shipment_id: str, *, data: bytes | None = None,
               readings: object = None, user: Person) -> TemperatureLog:
    """Store a shipment's temperature log (``data``: the CSV file as uploaded, or
    ``readings``: the JSON list) and its summary against the shipment's condition. One
    log per shipment (409 ``temperature_log_exists``: readings are never replaced, EU GMP
    Part IV 6). Readings are written with one executemany; the log's audited row carries
    the SHA-256 of what was uploaded. A log uploaded after receipt showing an excursion
    puts the items on hold (or turns an unknown-temperature hold into an excursion) and
    alerts QA."""
    if user.has_role("admin") and not user.has_role(*UPLOADERS):
        raise Forbidden("a temperature log is uploaded by the people who handle shipments")
    if data is not None:
        parsed = templog.parse_csv(data)
        source, digest = "csv", hashlib.sha256(data).hexdigest()
    else:
        parsed = templog.parse_json(readings)
        source = "json"
        digest = hashlib.sha256(json.dumps(readings, sort_keys=True,
                                           separators=(",", ":")).encode()).hexdigest()
    shipment = get_shipment(session, shipment_id, for_update=True)
    if session.get(TemperatureLog, shipment.shipment_id) is not None:
        raise conflict("temperature_log_exists", f"shipment {shipment.shipment_id} already "
                       "has its temperature log; readings are never replaced")
    summary = templog.summarise(parsed, shipment.min_c, shipment.max_c)
    log = TemperatureLog(
        shipment_id=shipment.shipment_id, source=source, file_sha256=digest,
        readings=summary.readings, first_at=summary.first_at, last_at=summary.last_at,
        min_c=summary.min_c, max_c=summary.max_c, interval_s=summary.interval_s,
        gap_after_s=summary.gap_after_s,
        excursions=json.dumps([excursion_json(e) for e in summary.excursions]),
        gaps=json.dumps([gap_json(g) for g in summary.gaps]),
        uploaded_by=user.id, uploaded_at=utcnow())
    session.add(log)
    session.flush()
    _store_readings(session, shipment.shipment_id, parsed)
    if shipment.received_at is not None and summary.excursions and shipment.decision is None:
        _hold(session, shipment, Hold.TEMPERATURE_EXCURSION.value)
    session.flush()
    return log


def _store_readings(session: Session, shipment_id: str, readings: Readings) -> None:
    rows = [{"shipment_id": shipment_id, "seq": n, "at": at, "c": c}
            for n, (at, c) in enumerate(zip(readings.times, readings.temps, strict=True))]
    session.connection().execute(_READINGS.insert(), rows)


def readings_of(session: Session, shipment_id: str) -> Readings:
    rows = session.execute(select(TemperatureReading.at, TemperatureReading.c).where(
        TemperatureReading.shipment_id == shipment_id).order_by(TemperatureReading.seq)).all()
    return Readings([r.at for r in rows], [r.c for r in rows])


def excursion_json(e: templog.Excursion) -> dict[str, Any]:
    return {"start": audit.format_time(e.start), "end": audit.format_time(e.end),
            "minutes": round(e.minutes, 3), "extreme_c": e.extreme_c}


def gap_json(g: templog.Gap) -> dict[str, Any]:
    return {"start": audit.format_time(g.start), "end": audit.format_time(g.end),
            "minutes": round(g.minutes, 3)}


@dataclass(frozen=True)
class LogSummary:
    """A stored log as the API and pages show it."""

    log: TemperatureLog
    excursions: list[dict[str, Any]]
    gaps: list[dict[str, Any]]

    @property
    def readings(self) -> int:
        return self.log.readings


def log_summary(log: TemperatureLog | None) -> LogSummary | None:
    if log is None:
        return None
    return LogSummary(log, json.loads(log.excursions), json.loads(log.gaps))


# --- receipt and reconciliation --------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptOutcome:
    shipment: Shipment
    receipt: ShipmentReceipt
    received: list[str]
    missing: list[str]
    unexpected: list[dict[str, Any]]
    hold: str | None


def _unexpected(payload: str, item_id: str | None, code: str, message: str) -> dict[str, Any]:
    return {"payload": identity.printable(labels.normalise_scan(payload), 300),
            "item_id": item_id, "code": code, "message": message}


def receive_shipment(session: Session, shipment_id: str, *, site: str, payloads: Sequence[str],
                     user: Person, location: str | None = None) -> ReceiptOutcome:
    """Receive a shipment at ``site`` by scanning its labels (SPEC §14): every label is
    verified (``labels.services.check_payload`` through identity); a bag of the shipment
    is received by ``identity.services.record_custody`` (``receive``); a label of anything
    else is ``unexpected`` and receives nothing; the shipment's items not scanned are
    ``missing`` (they stay in transit, a later receipt takes them). A discrepancy alerts
    QA and the destination. On receipt, a log with an excursion outside the condition, or
    a shipment with a ``logger_id`` and no log, holds the items (``temperature_excursion``
    / ``temperature_unknown``) and alerts QA until QA's disposition."""
    shipment = get_shipment(session, shipment_id, for_update=True)
    if shipment.status == ShipmentStatus.RECEIVED.value:
        raise conflict("already_received", f"shipment {shipment.shipment_id} was received "
                                           "in full already")
    if not payloads:
        raise field_error("payloads", "scan the label of every bag received")
    target = _site_code(session, site, "site")
    if target != shipment.to_site:
        raise conflict("wrong_destination", f"shipment {shipment.shipment_id} goes to "
                       f"{shipment.to_site}, not to {target}: it is received at its "
                       "destination", extra={"expected_site": shipment.to_site})
    if user.site.code != target:
        error = Forbidden(f"a receipt at {target} is recorded by a user of {target} (you "
                          f"are a user of {user.site.code})")
        error.code = "site_mismatch"  # type: ignore[misc]
        raise error
    members = {si.item_id: si for si in shipment_items(session, shipment.shipment_id)}
    unexpected: list[dict[str, Any]] = []
    scanned: list[str] = []
    for raw in payloads:
        text = labels.normalise_scan(raw) if isinstance(raw, str) else ""
        if not text.startswith("GMP1:"):
            unexpected.append(_unexpected(text, None, "malformed", "not a label payload"))
            continue
        try:
            item_id = identity.resolve_item_ref(session, text, field_name="payload")
        except DomainError as exc:
            unexpected.append(_unexpected(text, None, exc.code, exc.detail))
            continue
        entry = members.get(item_id)
        if entry is None:
            unexpected.append(_unexpected(text, item_id, "not_in_shipment",
                                          f"item {item_id} is not in shipment "
                                          f"{shipment.shipment_id}: not received"))
        elif entry.received_at is not None:
            unexpected.append(_unexpected(text, item_id, "already_received",
                                          f"item {item_id} was received already"))
        elif item_id not in scanned:
            scanned.append(item_id)
    now = utcnow()
    received = sorted(scanned)
    for item_id in received:  # one lock order: item rows by id
        try:
            identity.record_custody(session, item_id, action="receive", site=target,
                                    user=user, location=location,
                                    workstation=f"shipment {shipment.shipment_id}")
        except DomainError as exc:
            raise _named(exc, item_id) from None
    missing = sorted(i for i, e in members.items() if e.received_at is None and i not in scanned)
    hold = shipment.hold if shipment.decision is None else None
    if shipment.decision is None and hold is None:
        log = temperature_log(session, shipment.shipment_id)
        if log is not None and json.loads(log.excursions):
            hold = Hold.TEMPERATURE_EXCURSION.value
        elif log is None and shipment.logger_id:
            hold = Hold.TEMPERATURE_UNKNOWN.value
    receipt = ShipmentReceipt(
        shipment_id=shipment.shipment_id, site_code=target, received_by=user.id,
        received_at=now, received=json.dumps(received), missing=json.dumps(missing),
        unexpected=json.dumps(unexpected), hold=hold)
    session.add(receipt)
    session.flush()
    for item_id in received:
        members[item_id].received_at = now
        members[item_id].receipt_id = receipt.id
    if received:
        shipment.received_at = now
        shipment.status = (ShipmentStatus.PARTIALLY_RECEIVED.value if missing
                           else ShipmentStatus.RECEIVED.value)
    if hold is not None and shipment.hold is None:
        _hold(session, shipment, hold)
    if missing or unexpected:
        _discrepancy_alert(session, shipment, receipt, missing, unexpected)
    session.flush()
    return ReceiptOutcome(shipment, receipt, received, missing, unexpected,
                          shipment.hold if shipment.holding else None)


def _hold(session: Session, shipment: Shipment, hold: str) -> None:
    """Hold the shipment's items (or make an unknown-temperature hold an excursion) and
    alert QA at the destination, one alert per shipment and reason.

    The items' rows are locked first (id order; the shipment row is already locked, so
    the order is shipment, then items, as at receipt): a ship or thaw of one of them
    (identity's ``record_custody`` locks the item, then asks ``item_holds``) either
    commits before this hold or waits for it and is refused, never slips in between."""
    for row in shipment_items(session, shipment.shipment_id):
        identity.get_item(session, row.item_id, for_update=True)
    shipment.hold = hold
    shipment.held_at = shipment.held_at or utcnow()
    what = ("its temperature log shows an excursion outside "
            if hold == Hold.TEMPERATURE_EXCURSION.value else
            f"it carried logger {shipment.logger_id} and arrived with no temperature log for ")
    raise_alert(session, AlertSpec(
        cause=f"shipment_hold:{shipment.shipment_id}:{hold}", kind=hold,
        severity="major", subject_type="shipment", subject_id=shipment.shipment_id,
        message=f"shipment {shipment.shipment_id} ({shipment.from_site} → "
                f"{shipment.to_site}) is on hold: {what}{shipment.min_c:g} to "
                f"{shipment.max_c:g} °C; its items may not be used until QA's disposition",
        roles=("qa",), site_code=shipment.to_site))


def _discrepancy_alert(session: Session, shipment: Shipment, receipt: ShipmentReceipt,
                       missing: list[str], unexpected: list[dict[str, Any]]) -> None:
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected label(s) scanned")
    raise_alert(session, AlertSpec(
        cause=f"shipment_discrepancy:{shipment.shipment_id}:{receipt.id}",
        kind="shipment_discrepancy", severity="major", subject_type="shipment",
        subject_id=shipment.shipment_id,
        message=f"receipt of shipment {shipment.shipment_id} at {receipt.site_code}: "
                + "; ".join(parts),
        roles=("qa", "operator", "clinician"), site_code=shipment.to_site))


def receipts_of(session: Session, shipment_id: str) -> list[ShipmentReceipt]:
    return list(session.scalars(select(ShipmentReceipt).where(
        ShipmentReceipt.shipment_id == shipment_id).order_by(ShipmentReceipt.id)))


# --- QA's disposition ------------------------------------------------------------------------


def decide_shipment(session: Session, shipment_id: str, *, decision: str, user: Person,
                    signature: SignatureInput, justification: str | None = None) -> Shipment:
    """QA's signed disposition of a held shipment (SPEC §14; EU GDP 9.2, EU GMP Part IV
    6): ``accept`` with a written ``justification`` lifts the hold (meaning ``approved``);
    ``reject`` (meaning ``rejected``) rejects every item not yet in a final status through
    identity's state machine: a quality block (``blocked``) and then ``rejected`` where the
    item's kind has that status (samples stay blocked). The hold's alerts close. 409
    ``not_held`` when the shipment is not on hold or was decided already."""
    if decision not in ("accept", "reject"):
        raise field_error("decision", "must be accept or reject")
    if not user.has_role("qa"):
        raise Forbidden("QA decides a held shipment")
    text = (justification or "").strip()
    if decision == "accept" and not text:
        raise field_error("justification", "accepting a held shipment needs a justification")
    shipment = get_shipment(session, shipment_id, for_update=True)
    if not shipment.holding:
        raise conflict("not_held", f"shipment {shipment.shipment_id} is not on hold"
                       + (f": QA {shipment.decision} it already" if shipment.decision else ""))
    ids = [si.item_id for si in shipment_items(session, shipment.shipment_id)]
    log = temperature_log(session, shipment.shipment_id)
    signer = session.get(User, user.id)
    assert signer is not None
    signed = sign(session, signer, signature, entity_type="shipment",
                  entity_id=shipment.shipment_id,
                  content={"shipment_id": shipment.shipment_id, "decision": decision,
                           "justification": text or None, "hold": shipment.hold,
                           "items": ids, "condition": [shipment.min_c, shipment.max_c],
                           "log_sha256": log.file_sha256 if log else None,
                           "excursions": json.loads(log.excursions) if log else None},
                  meanings=ACCEPT_MEANINGS if decision == "accept" else REJECT_MEANINGS)
    shipment.decision = (Decision.ACCEPTED if decision == "accept" else Decision.REJECTED).value
    shipment.justification = text or None
    shipment.decided_by, shipment.decided_at = user.id, utcnow()
    shipment.decision_signature_id = signed.id
    session.flush()
    if decision == "reject":
        why = f"shipment {shipment.shipment_id} rejected by QA ({shipment.hold})"
        for item_id in sorted(ids):
            item = identity.get_item(session, item_id, for_update=True)
            if item.status in identity.FINAL_STATUSES:
                continue
            if item.status != identity.ItemStatus.BLOCKED:
                identity.transition_item(session, item_id, identity.ItemStatus.BLOCKED,
                                         reason=why)
            if identity.can_transition(item, identity.ItemStatus.REJECTED):
                identity.transition_item(session, item_id, identity.ItemStatus.REJECTED,
                                         reason=why)
    alerts.resolve_for_subject(session, "shipment", shipment.shipment_id, HOLD_ALERT_KINDS,
                               f"QA {shipment.decision} shipment {shipment.shipment_id}")
    session.flush()
    return shipment


def shipments_to_handle(session: Session, site_code: str, *, qa: bool,
                        limit: int = 20) -> tuple[list[Shipment], list[Shipment]]:
    """(held shipments waiting for QA's disposition: every site's for QA, else those
    reaching ``site_code``; shipments in transit to ``site_code``), oldest first."""
    held = select(Shipment).where(Shipment.hold.is_not(None), Shipment.decision.is_(None))
    if not qa:
        held = held.where(Shipment.to_site == site_code)
    incoming = select(Shipment).where(
        Shipment.to_site == site_code,
        Shipment.status != ShipmentStatus.RECEIVED.value)
    return (list(session.scalars(held.order_by(Shipment.held_at).limit(limit))),
            list(session.scalars(incoming.order_by(Shipment.shipped_at).limit(limit))))


# --- the seam: why an item is held -----------------------------------------------------------

_HOLDS = (
    select(Shipment.shipment_id, Shipment.hold)
    .join(ShipmentItem, ShipmentItem.shipment_id == Shipment.shipment_id)
    .where(ShipmentItem.item_id == bindparam("item_id"),
           Shipment.hold.is_not(None), Shipment.decision.is_(None))
)


def item_holds(session: Session, item_id: str) -> list[Reason]:
    """``registry.item_holds``: the holds of the shipments an item travelled in that QA
    has not decided (one indexed query; the scan station asks it on every scan)."""
    rows = session.execute(_HOLDS, {"item_id": item_id}).all()
    return [{"code": row.hold, "message": _hold_message(row.shipment_id, row.hold, item_id)}
            for row in rows]


def _hold_message(shipment_id: str, hold: str, item_id: str) -> str:
    if hold == Hold.TEMPERATURE_EXCURSION.value:
        return (f"item {item_id} travelled in shipment {shipment_id}, whose temperature log "
                "shows an excursion outside its condition: do not use until QA's disposition")
    return (f"item {item_id} travelled in shipment {shipment_id}, which arrived without its "
            "temperature log: do not use until QA's disposition")


def shipments_of_items(session: Session, item_ids: Sequence[str]) -> list[Shipment]:
    """The shipments any of these items travelled in, oldest first."""
    if not item_ids:
        return []
    return list(session.scalars(
        select(Shipment).where(Shipment.shipment_id.in_(
            select(ShipmentItem.shipment_id).where(ShipmentItem.item_id.in_(list(item_ids)))))
        .order_by(Shipment.shipped_at, Shipment.shipment_id)))
