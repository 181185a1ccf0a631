"""The bedside check and administration (SPEC §6)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

import labels.services as labels
from gmp_mes import registry
from gmp_mes.accounts import Person
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.db import lock_rows
from gmp_mes.errors import DomainError, FollowUp
from gmp_mes.models import Meaning, User
from gmp_mes.signatures import SignatureInput, sign
from identity.models import (
    Administration,
    BedsideVerification,
    CustodyAction,
    CustodyEvent,
    Item,
    ItemKind,
    ItemStatus,
    Patient,
)
from identity.services._common import (
    _bedside_warnings,
    _custody,
    _forged_alert,
    _item_holds,
    _item_problems,
    _r,
)
from identity.services.items import transition_item
from identity.services.lookup import printable
from identity.services.rules import INFUSIBLE, post_thaw_deadline
from identity.services.scans import not_an_item

S = ItemStatus


@dataclass
class BedsideResult:
    match: bool
    reasons: list[dict[str, str]]
    item: Item | None
    patient: Patient | None
    verification: BedsideVerification | None = None
    administer_before: datetime | None = None  # post-thaw deadline of a thawed bag
    # Forged or voided labels scanned: (payload text, code, message, subject) to alert QA.
    label_alerts: list[tuple[str, str, str, str]] = field(default_factory=list)
    # On a MATCH: what the clinician must know before infusing (conditional release).
    warnings: list[dict[str, str]] = field(default_factory=list)


def _last_location_event(session: Session, item_id: str) -> CustodyEvent | None:
    return session.scalar(
        select(CustodyEvent)
        .where(CustodyEvent.item_id == item_id,
               CustodyEvent.action.notin_([CustodyAction.SCAN.value]))
        .order_by(CustodyEvent.id.desc()).limit(1)
    )


def _evaluate_bedside(
    session: Session, patient_raw: str, product_raw: str, site_code: str | None
) -> BedsideResult:
    now = utcnow()
    reasons: list[dict[str, str]] = []
    wristband = labels.check_payload(session, patient_raw)
    product = labels.check_payload(session, product_raw)
    patient = None
    item = None
    for code, message in wristband.reasons:
        reasons.append(_r("patient_label_invalid", f"wristband: {message} ({code})"))
    if wristband.payload is not None and not wristband.reasons:
        wb = session.get(Item, wristband.payload.subject_id)
        if wristband.payload.kind_code != "WB" or wb is None or wb.kind != ItemKind.WRISTBAND:
            reasons.append(_r("patient_label_invalid", "the first scan is not a patient wristband"))
        elif wb.status != S.AVAILABLE or wb.coi_id != wristband.payload.coi_id:
            reasons.append(_r("patient_label_invalid",
                              f"wristband {wb.item_id} is {wb.status}; it is no longer valid"))
        else:
            patient = session.scalar(select(Patient).where(Patient.coi_id == wb.coi_id))
    for code, message in product.reasons:
        reasons.append(_r("product_label_invalid", f"bag: {message} ({code})"))
    if product.payload is not None and product.payload.asset:
        # A lot or equipment label is no bag (SPEC §11): say so, whatever else it is.
        reasons.append(_r("product_label_invalid",
                          f"bag: {not_an_item(product.payload)['message']} (not_an_item)"))
    elif product.payload is not None and not product.reasons:
        item = session.get(Item, product.payload.subject_id)
        if item is None:
            reasons.append(_r("product_label_invalid",
                              f"no item {product.payload.subject_id} is on record"))
        elif item.coi_id != product.payload.coi_id:
            reasons.append(_r("product_label_invalid", "the bag label's COI is not the item's"))
    patient_coi = (wristband.payload.coi_id
                   if wristband.payload is not None and not wristband.payload.asset else None)
    product_coi = item.coi_id if item is not None else (
        product.payload.coi_id
        if product.payload is not None and not product.payload.asset else None)
    if patient_coi and product_coi and patient_coi != product_coi:
        reasons.append(_r("coi_mismatch", f"wristband COI {patient_coi} is not the bag's COI "
                                          f"{product_coi}: this product is for another patient"))
    if item is not None:
        if item.kind != ItemKind.FINAL_PRODUCT:
            reasons.append(_r("not_final_product", f"item {item.item_id} is a {item.kind}, "
                                                   "not a final-product bag"))
        administered = item.status == S.ADMINISTERED or session.scalar(
            select(Administration.id).where(Administration.item_id == item.item_id)
        ) is not None
        if administered:
            reasons.append(_r("already_administered",
                              f"bag {item.item_id} has already been administered"))
        problems = _item_problems(item, now)
        reasons.extend(problems)
        reasons.extend(_item_holds(session, item.item_id))  # SPEC §14: e.g. an excursion
        specific = {S.ADMINISTERED, S.BLOCKED, S.EXPIRED}
        if (item.kind == ItemKind.FINAL_PRODUCT and item.status not in INFUSIBLE
                and item.status not in specific):
            reasons.append(_r("status_not_infusible",
                              f"bag {item.item_id} is {item.status}; only released, "
                              "conditionally released, received or thawed bags are infused"))
        last = _last_location_event(session, item.item_id)
        if last is None or last.site_code != site_code or last.action == CustodyAction.SHIP:
            where = "in transit" if last is not None and last.action == CustodyAction.SHIP else (
                last.site_code if last is not None else "unknown")
            reasons.append(_r("wrong_site", f"the bag's last custody event is at {where}, "
                                            f"not at your site {site_code}"))
    alerts = [
        (check.payload.text if check.payload is not None else labels.normalise_scan(raw), code,
         message, check.payload.subject_id if check.payload is not None else "unknown")
        for check, raw in ((wristband, patient_raw), (product, product_raw))
        for code, message in check.reasons if code in ("bad_signature", "voided")
    ]
    warnings = _bedside_warnings(session, item) if item is not None and not reasons else []
    return BedsideResult(match=not reasons, reasons=reasons, item=item, patient=patient,
                         administer_before=post_thaw_deadline(item) if item else None,
                         label_alerts=alerts, warnings=warnings)


def _bedside_alerts(session: Session, alerts: list[tuple[str, str, str, str]],
                    site_code: str | None) -> None:
    """A forged or voided label at the bedside alerts QA as it does at a scan station."""
    for text, code, message, subject in alerts:
        _forged_alert(session, text, code, message, site_code, "bedside", subject)


def _record_verdict(
    session: Session, result: BedsideResult, patient_raw: str, product_raw: str,
    user: Person, site_code: str | None, purpose: str, product_coi: str | None = None,
) -> BedsideVerification:
    verification = BedsideVerification(
        item_id=result.item.item_id if result.item else None,
        patient_coi_id=result.patient.coi_id if result.patient else None,
        product_coi_id=result.item.coi_id if result.item else product_coi,
        patient_payload=printable(labels.normalise_scan(patient_raw), 1000),
        product_payload=printable(labels.normalise_scan(product_raw), 1000),
        match=result.match,
        reasons=json.dumps(result.reasons),
        warnings=json.dumps(result.warnings),
        purpose=purpose,
        user_id=user.id,
        site_code=site_code,
        verified_at=utcnow(),
    )
    session.add(verification)
    session.flush()
    return verification


def verify_bedside(
    session: Session, patient_payload: str, product_payload: str, *, user: Person,
    site_code: str | None,
) -> BedsideResult:
    """SPEC §6: every reason at once; the verdict is recorded."""
    result = _evaluate_bedside(session, patient_payload, product_payload, site_code)
    result.verification = _record_verdict(session, result, patient_payload, product_payload,
                                          user, site_code, "verify")
    _bedside_alerts(session, result.label_alerts, site_code)
    return result


def recorded_bedside(
    session: Session, verification_id: int, *, user: Person, site_code: str | None,
) -> BedsideResult | None:
    """The verdict a bedside check recorded, for the page's GET after the POST (post/
    redirect/get): match, reasons and warnings as recorded, the bag and patient as they
    are now. Only the clinician who checked sees it; nothing is recorded again."""
    verification = session.get(BedsideVerification, verification_id)
    if (verification is None or verification.user_id != user.id
            or verification.purpose != "verify"):
        return None
    now = _evaluate_bedside(session, verification.patient_payload,
                            verification.product_payload, site_code)
    now.match = verification.match
    now.reasons = json.loads(verification.reasons)
    now.warnings = json.loads(verification.warnings or "[]")
    now.verification = verification
    now.label_alerts = []
    return now


class BedsideRefused(DomainError):
    status, code, title = 409, "bedside_mismatch", "Do not infuse"


def administer(
    session: Session,
    patient_payload: str,
    product_payload: str,
    *,
    user: Person,
    site_code: str | None,
    signature: SignatureInput,
) -> Administration:
    """Infuse after a matching bedside check, signed by the clinician (meaning
    ``administered``). The bag row is locked first, so of concurrent requests exactly
    one administers; the unique constraint on administration.item_id backs it up."""
    probe = labels.check_payload(session, product_payload)
    if probe.payload is not None and not probe.reasons:
        # Serialise concurrent administrations of this bag before deciding anything.
        session.scalar(lock_rows(select(Item).where(Item.item_id == probe.payload.subject_id),
                                  Item))
    result = _evaluate_bedside(session, patient_payload, product_payload, site_code)
    if not result.match:
        codes = {r["code"] for r in result.reasons}
        error = BedsideRefused(
            "do not infuse: " + "; ".join(r["message"] for r in result.reasons),
            extra={"match": False, "reasons": result.reasons},
            follow_up=_verdict_follow_up(result, patient_payload, product_payload, user,
                                         site_code),
        )
        if codes == {"already_administered"}:
            error.code = "already_administered"  # type: ignore[misc]
        raise error
    item = result.item
    assert item is not None and result.patient is not None
    verification = _record_verdict(session, result, patient_payload, product_payload, user,
                                   site_code, "administration")
    signer = session.get(User, user.id)
    assert signer is not None
    signed = sign(
        session, signer, signature, entity_type="item", entity_id=item.item_id,
        content={"item_id": item.item_id, "coi_id": item.coi_id,
                 "batch_number": item.batch_number, "verification_id": verification.id,
                 "site": site_code, "warnings": result.warnings},
        meanings={Meaning.ADMINISTERED.value},
    )
    transition_item(session, item.item_id, S.ADMINISTERED,
                    reason=f"administered at {site_code}")
    administration = Administration(
        item_id=item.item_id, coi_id=item.coi_id, verification_id=verification.id,
        signature_id=signed.id, user_id=user.id, site_code=site_code or "",
        administered_at=utcnow(), warnings=json.dumps(result.warnings),
    )
    session.add(administration)
    _custody(session, item, CustodyAction.ADMINISTER, site_code=site_code,
             location=item.location, detail={"signature_id": signed.id})
    item.custodian = user.id
    session.flush()
    # SPEC §16: the follow-up starts at the infusion, in the same transaction (outcomes
    # schedules the visits; identity never imports it).
    facts = registry.AdministrationFacts(
        item_id=item.item_id, coi_id=item.coi_id, batch_number=item.batch_number,
        administered_at=administration.administered_at, site_code=administration.site_code)
    for follow in registry.administered.providers():
        follow(session, facts)
    return administration


def _verdict_follow_up(
    result: BedsideResult, patient_raw: str, product_raw: str, user: Person,
    site_code: str | None,
) -> FollowUp:
    """A refused administration still records its verdict, in its own transaction."""
    item_id = result.item.item_id if result.item else None
    patient_coi = result.patient.coi_id if result.patient else None
    item_coi = result.item.coi_id if result.item else None
    reasons = list(result.reasons)
    alerts = list(result.label_alerts)

    def follow_up(session: Session) -> None:
        session.info["actor"] = Actor(user.username, user.id, user.full_name)
        session.add(BedsideVerification(
            item_id=item_id, patient_coi_id=patient_coi, product_coi_id=item_coi,
            patient_payload=printable(labels.normalise_scan(patient_raw), 1000),
            product_payload=printable(labels.normalise_scan(product_raw), 1000),
            match=False, reasons=json.dumps(reasons), purpose="administration",
            user_id=user.id, site_code=site_code, verified_at=utcnow(),
        ))
        session.flush()
        _bedside_alerts(session, alerts, site_code)
        session.flush()

    return follow_up


def administration_of(session: Session, item_id: str) -> Administration | None:
    return session.scalar(select(Administration).where(Administration.item_id == item_id))


def verifications_of(session: Session, item_id: str) -> list[BedsideVerification]:
    return list(session.scalars(
        select(BedsideVerification).where(BedsideVerification.item_id == item_id)
        .order_by(BedsideVerification.id)
    ))
