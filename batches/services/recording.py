"""Recording and correcting step records: checked, signed by the performer (and a
verifier on critical steps), with the identity and label scans; out-of-limit values
open deviations, the fill creates the final-product bags."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import identity.services as identity
from batches.models import (
    Batch,
    Deviation,
    DeviationKind,
    DeviationStatus,
    StepRecord,
    record_key,
)
from batches.services._common import deviation_number, load_user
from batches.services.batches import definition_of_batch, get_batch
from batches.services.interface import final_product_item_ids
from batches.services.lifecycle import correction_open, recording_open
from batches.services.requirements import NOTHING_GIVEN, check_requirements
from batches.services.status import refresh_status
from batches.services.steps import allowed_after, last_occurrence, last_step_index, recorded_steps
from batches.services.values import check_values
from gmp_mes import audit, signatures
from gmp_mes.audit import canonical_json
from gmp_mes.clock import utcnow
from gmp_mes.durations import format_duration
from gmp_mes.errors import InvalidTransition, NotFound, conflict, field_error
from gmp_mes.models import Meaning, Signature, User
from gmp_mes.registry import Reason, StepResources
from gmp_mes.signatures import SignatureInput
from processes.definitions import ProcessDefinition, Step, fmt_number

if TYPE_CHECKING:
    from identity.models import Item


@dataclass(frozen=True)
class VerifierInput:
    """The second person's signature on a critical step: user name plus password
    (21 CFR 11.200(a)(1)(i): both components when not in a continuous session)."""

    username: str
    password: str
    meaning: str = Meaning.VERIFIED.value
    reason: str | None = None


@dataclass
class StepOutcome:
    record: StepRecord
    deviations: list[Deviation] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)


def _sign_step(
    session: Session,
    user: User,
    signature: SignatureInput,
    verifier: VerifierInput | None,
    step: Step,
    key: str,
    content: dict[str, Any],
) -> tuple[Signature, Signature | None]:
    performed = signatures.sign(session, user, signature, entity_type="step_record",
                                entity_id=key, content=content,
                                meanings={Meaning.PERFORMED.value})
    if verifier is None:
        if step.critical:
            raise field_error("verifier", f"step {step.code} is critical: a second person "
                                          "must verify it with their own signature")
        return performed, None
    # One generic refusal for the verifier field (no name, state or role oracle), and
    # lockout only within the failed-password rate limits (21 CFR 11.300(d)).
    verified = signatures.sign_as_second_person(
        session, verifier.username,
        SignatureInput(password=verifier.password, meaning=verifier.meaning,
                       reason=verifier.reason),
        performer=user, roles=("operator", "qa"),
        entity_type="step_record", entity_id=key, content=content,
        meanings={Meaning.VERIFIED.value},
    )
    return performed, verified


def signed_content(
    key: str, values: dict[str, Any], performed_at: datetime, *,
    supersedes: str | None = None, reason: str | None = None,
    identity_scan: dict[str, Any] | None = None,
    label_scans: list[dict[str, Any]] | None = None,
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the performer and the verifier sign (21 CFR 11.70: the signature is bound
    to this content by its digest, so a later change no longer matches): the values and
    scans, and what the step used (lots, equipment: SPEC §11)."""
    content: dict[str, Any] = {"record": key, "values": values,
                               "performed_at": audit.format_time(performed_at)}
    if supersedes is not None:
        content.update(supersedes=supersedes, reason=reason)
    if identity_scan is not None:
        content["identity_scan"] = identity_scan
    if label_scans is not None:
        content["label_scans"] = label_scans
    if resources is not None:
        content["resources"] = resources
    return content


def signature_binds(session: Session, record: StepRecord) -> bool:
    """True while the stored record is exactly what its signatures signed."""
    supersedes = session.get(StepRecord, record.supersedes_id) if record.supersedes_id else None
    content = signed_content(
        record.key, record.values, record.performed_at,
        supersedes=supersedes.key if supersedes else None,
        reason=record.correction_reason if supersedes else None,
        identity_scan=record.scan, label_scans=record.scans, resources=record.used,
    )
    signed = [record.signature] + ([record.verifier_signature]
                                   if record.verifier_signature else [])
    return all(signatures.still_binds(sig, content) for sig in signed)


def record_step(
    session: Session,
    batch_number: str,
    step_code: str,
    *,
    values: object,
    user_id: int,
    signature: SignatureInput,
    verifier: VerifierInput | None = None,
    scan: str | None = None,
    scans: list[str] | None = None,
    resources: StepResources = NOTHING_GIVEN,
) -> StepOutcome:
    """Record one execution of a step, signed; out-of-limit values open deviations.

    ``resources``: the lots, equipment (and room) the operator gave. What the step
    declares it needs is checked by the ``registry.step_requirements`` providers; any
    reason refuses the step (409, the first reason's code, ``reasons`` listing all), else
    what they answered is signed with the step and applied (lots consumed, equipment use
    logged) in the same transaction.

    ``scans``: the labels scanned by a label-check step (``scans = "final_product"``),
    one per bag: each checked like ``scan``, and the step refused (409
    ``bags_not_scanned``) until every final-product bag of the batch is among them.

    ``scan``: a label scanned as the step's identity check (the bag at receipt), checked
    against the batch (its COI, its material) and recorded with the step, inside what is
    signed; a mismatch refuses the step (409 ``coi_mismatch``, ``wrong_batch``, ...).
    The step that consumes the starting material (SPEC §2) ends its ``in_process``."""
    user = load_user(session, user_id)
    batch = get_batch(session, batch_number, for_update=True)
    definition = definition_of_batch(batch)
    step = _recordable_step(session, batch, definition, step_code)
    clean, results, bags = check_values(step, values)
    occurrence = 1 + last_occurrence(session, batch, step.code)
    consumes = step.code == definition.consuming_step.code and occurrence == 1
    if consumes:
        # Row locks before the first audited write (the scan, the signatures).
        identity.get_item(session, batch.starting_item_id, for_update=True)
    if scans is not None and step.scans is None:
        raise field_error("scans", f"step {step.code} checks no labels: leave scans out")
    checked = _identity_scan(session, batch, step, user, scan) if scan is not None else None
    labels = (_label_scans(session, batch, step, user, scans or [])
              if step.scans is not None else None)
    now = utcnow()
    needs = check_requirements(
        session, batch, definition, step, performer=user,
        verifier_username=verifier.username if verifier else None, given=resources, at=now,
        recording=True,
    )
    if needs.reasons:
        raise needs.refusal(step)
    used = needs.signed or None
    key = record_key(batch.batch_number, step.code, occurrence, 1)
    content = signed_content(key, clean, now, identity_scan=checked, label_scans=labels,
                             resources=used)
    performed, verified = _sign_step(session, user, signature, verifier, step, key, content)
    record = StepRecord(
        batch_id=batch.id, batch_number=batch.batch_number, step_code=step.code,
        step_index=step.index, occurrence=occurrence, version=1,
        values_json=canonical_json(clean), results_json=canonical_json(results),
        in_limits=all(r["in_limits"] for r in results), performed_at=now,
        recorded_by=user.id, signature=performed, verifier_signature=verified,
        identity_scan=canonical_json(checked) if checked is not None else None,
        label_scans=canonical_json(labels) if labels is not None else None,
        resources=canonical_json(used) if used is not None else None,
    )
    outcome = StepOutcome(record)
    if consumes:
        identity.consume_starting_material(session, batch.starting_item_id,
                                           batch.batch_number, step.code)
    if step.creates == "final_product":
        outcome.items = _fill(session, batch, definition, step, bags, now)
        record.created_items = json.dumps([item.item_id for item in outcome.items])
    session.add(record)
    session.flush()
    for apply in needs.applies:
        apply(session, record.id)
    outcome.deviations = _open_limit_deviations(session, batch, step, record, results, user)
    if step.index == len(definition.steps) - 1:
        batch.completed_at = now
    refresh_status(session, batch, definition=definition)
    session.flush()
    return outcome


def _recordable_step(
    session: Session, batch: Batch, definition: ProcessDefinition, step_code: str
) -> Step:
    """The step, if the batch takes it now (its state and the order of the steps)."""
    step = definition.step(step_code)
    if step is None:
        raise NotFound(f"process {batch.process.key} has no step {step_code!r}")
    if not recording_open(batch.status):
        raise InvalidTransition(
            f"batch {batch.batch_number} is {batch.status}: no more steps can be recorded"
        )
    # Only what the order rule needs, each an indexed read: recording stays as fast on
    # the 1,000th record as on the first (issue 15).
    allowed = allowed_after(definition, last_step_index(session, batch))
    if step.code not in allowed:
        done = recorded_steps(session, batch, definition)
        why = (f"step {step.code} is already recorded; a change is a correction"
               if step.code in done and not step.repeatable
               else f"step {step.code} is out of order")
        raise InvalidTransition(
            f"{why}: the next step is {' or '.join(allowed) or 'none'}",
            extra={"next_steps": allowed},
        )
    return step


@dataclass(frozen=True)
class StepCheckResult:
    """The dry run of a step (``POST .../check``): would it be recorded now?"""

    ok: bool
    reasons: list[Reason]


def check_step(
    session: Session,
    batch_number: str,
    step_code: str,
    *,
    user_id: int,
    resources: StepResources = NOTHING_GIVEN,
    verifier_username: str | None = None,
) -> StepCheckResult:
    """Every reason the step would be refused for now, before anyone signs (SPEC §11):
    the batch's state and the order of the steps, then what the step needs. Nothing is
    written and nothing is locked; the real record checks again under its locks."""
    user = load_user(session, user_id)
    batch = get_batch(session, batch_number)
    definition = definition_of_batch(batch)
    try:
        step = _recordable_step(session, batch, definition, step_code)
    except InvalidTransition as exc:
        return StepCheckResult(False, [{"code": exc.code, "message": str(exc)}])
    needs = check_requirements(
        session, batch, definition, step, performer=user,
        verifier_username=verifier_username, given=resources, at=utcnow(), recording=False,
    )
    return StepCheckResult(not needs.reasons, needs.reasons)


def _label_scans(
    session: Session, batch: Batch, step: Step, user: User, payloads: list[str]
) -> list[dict[str, Any]]:
    """The label check (``scans = "final_product"``): every scan checked like the step's
    ``scan`` (a refused one refuses the step with its code), each must be a different
    final-product bag of this batch, and every such bag must be scanned."""
    if not isinstance(payloads, list) or not all(isinstance(p, str) for p in payloads):
        raise field_error("scans", "must be a list of scanned labels")
    bags = final_product_item_ids(session, batch.batch_number)
    checked: list[dict[str, Any]] = []
    seen: set[str] = set()
    for payload in payloads:
        result = _identity_scan(session, batch, step, user, payload, field_name="scans")
        item_id = result["item_id"]
        if item_id not in bags:
            raise conflict(
                "label_mismatch",
                f"step {step.code}: {item_id} is a {result['kind']}, not a final-product bag "
                f"of batch {batch.batch_number}; scan the labels of its bags",
                extra={"item_id": item_id}, errors={"scans": [
                    f"{item_id} is not a bag of this batch"]},
            )
        if item_id in seen:
            raise field_error("scans", f"bag {item_id} is scanned twice: scan each bag once")
        seen.add(item_id)
        checked.append(result)
    missing = [item_id for item_id in bags if item_id not in seen]
    if missing:
        message = (f"scan the label of every bag: still to scan {', '.join(missing)}"
                   if bags else "the batch has no final-product bags to check")
        raise conflict("bags_not_scanned", f"step {step.code}: {message}",
                       extra={"missing": missing}, errors={"scans": [message]})
    return checked


def _identity_scan(
    session: Session, batch: Batch, step: Step, user: User, payload: str, *,
    field_name: str = "scan",
) -> dict[str, Any]:
    """Check a scanned label against the batch as the scan station does (signature, not
    voided, COI, this batch's material, status), recording the scan; refuse the step when
    it is not OK. A refused scan is still recorded, in its own transaction."""
    if not isinstance(payload, str) or not payload.strip():
        raise field_error(field_name, "scan the bag's label (or leave the field out)"
                          if field_name == "scan" else "an empty scan: scan the bag's label")
    workstation = f"batch {batch.batch_number} step {step.code}"
    result = identity.scan(session, payload, user=user, site_code=user.site.code,
                           workstation=workstation, batch_number=batch.batch_number)
    if not result.ok:
        codes = [r["code"] for r in result.reasons]
        code = "coi_mismatch" if "coi_mismatch" in codes else codes[0]
        actor = audit.Actor(user.username, user.id, user.full_name)
        site_code, batch_number = user.site.code, batch.batch_number

        def record_refused_scan(s: Session) -> None:
            s.info["actor"] = actor
            identity.scan(s, payload, user=user, site_code=site_code,
                          workstation=workstation, batch_number=batch_number)

        raise conflict(
            code,
            f"step {step.code}: the scanned label is refused for batch {batch.batch_number}: "
            + "; ".join(r["message"] for r in result.reasons),
            extra={"reasons": result.reasons}, follow_up=record_refused_scan,
            errors=None if field_name == "scan" else {field_name: [
                "; ".join(r["message"] for r in result.reasons)]},
        )
    assert result.item is not None
    return {"item_id": result.item.item_id, "kind": result.item.kind,
            "coi_id": result.coi_id, "status": result.status,
            "custody_event_id": result.event_id}


def _fill(
    session: Session, batch: Batch, definition: ProcessDefinition, step: Step, bags: int,
    now: datetime,
) -> list[Item]:
    """SPEC §3: the fill step creates the final-product bags, children of the starting
    material, in quarantine, expiring shelf_life.final_product after the step."""
    expires_at = now + definition.final_product_shelf_life if step.expiry_from else None
    post_thaw = format_duration(definition.post_thaw) if definition.post_thaw else None
    return [
        identity.create_item(
            session, kind="final_product", coi_id=batch.coi_id, site_code=batch.site_code,
            status="quarantine", parent_ids=(batch.starting_item_id,),
            batch_number=batch.batch_number,
            description=f"{definition.name}, bag {n} of {bags}",
            expires_at=expires_at, expiry_warnings=definition.warn_before,
            post_thaw_window=post_thaw,
        )
        for n in range(1, bags + 1)
    ]


def _open_limit_deviations(
    session: Session, batch: Batch, step: Step, record: StepRecord,
    results: list[dict[str, Any]], user: User, *, previous: dict[str, Any] | None = None,
) -> list[Deviation]:
    opened = []
    for result in results:
        if result["in_limits"]:
            continue
        if previous is not None and previous.get(result["code"]) == result["value"]:
            continue  # unchanged by the correction: its deviation is already open
        value = result["value"]
        shown = fmt_number(value) if isinstance(value, float | int) and not isinstance(
            value, bool) else json.dumps(value)
        unit = f" {result['unit']}" if result["unit"] else ""
        deviation = Deviation(
            number=deviation_number(session, batch), batch_id=batch.id,
            batch_number=batch.batch_number, kind=DeviationKind.AUTOMATIC.value,
            severity=result["severity"], status=DeviationStatus.OPEN.value,
            description=(
                f"{step.name} ({record.step_code} #{record.occurrence}): {result['name']} = "
                f"{shown}{unit}, outside the limits {result['limits']}"
            ),
            step_record_id=record.id, step_code=record.step_code, parameter=result["code"],
            opened_at=record.performed_at, opened_by=user.id,
        )
        session.add(deviation)
        session.flush()
        opened.append(deviation)
    return opened


def correct_step(
    session: Session,
    batch_number: str,
    step_code: str,
    *,
    values: object,
    reason: str,
    user_id: int,
    signature: SignatureInput,
    occurrence: int | None = None,
    verifier: VerifierInput | None = None,
) -> StepOutcome:
    """A correction is a new signed version with a reason; the original stays (11.10(e))."""
    if not isinstance(reason, str) or not reason.strip():
        raise field_error("reason", "a correction needs a reason")
    user = load_user(session, user_id)
    batch = get_batch(session, batch_number, for_update=True)
    definition = definition_of_batch(batch)
    step = definition.step(step_code)
    if step is None:
        raise NotFound(f"process {batch.process.key} has no step {step_code!r}")
    if not correction_open(batch.status):
        raise InvalidTransition(
            f"batch {batch_number} is {batch.status}: its record can no longer be corrected"
        )
    # The current version of the record (the highest occurrence by default): one indexed
    # read (uq_step_record_version), not every record of the batch.
    mine = select(StepRecord).where(StepRecord.batch_id == batch.id,
                                    StepRecord.step_code == step.code)
    if occurrence is not None:
        mine = mine.where(StepRecord.occurrence == occurrence)
    original = session.scalar(
        mine.order_by(StepRecord.occurrence.desc(), StepRecord.version.desc()).limit(1))
    if original is None:
        if occurrence is None or step.code not in recorded_steps(session, batch, definition):
            raise InvalidTransition(f"step {step.code} has no record to correct")
        raise NotFound(f"step {step.code} has no record #{occurrence}")
    clean, results, bags = check_values(step, values)
    if step.creates and bags != original.values.get("bags", 1):
        raise InvalidTransition(
            "the number of bags filled cannot be corrected: the bags exist; destroy or "
            "record them through their items"
        )
    now = utcnow()
    version = original.version + 1
    key = record_key(batch.batch_number, step.code, original.occurrence, version)
    content = signed_content(key, clean, now, supersedes=original.key, reason=reason.strip())
    performed, verified = _sign_step(session, user, signature, verifier, step, key, content)
    record = StepRecord(
        batch_id=batch.id, batch_number=batch.batch_number, step_code=step.code,
        step_index=step.index, occurrence=original.occurrence, version=version,
        supersedes_id=original.id, correction_reason=reason.strip(),
        values_json=canonical_json(clean), results_json=canonical_json(results),
        in_limits=all(r["in_limits"] for r in results), created_items=original.created_items,
        performed_at=now, recorded_by=user.id, signature=performed, verifier_signature=verified,
    )
    with audit.reason(session, f"correction: {reason.strip()}"):
        session.add(record)
        session.flush()
        deviations = _open_limit_deviations(session, batch, step, record, results, user,
                                            previous=original.values)
        refresh_status(session, batch, definition=definition)
        session.flush()
    return StepOutcome(record, deviations)
