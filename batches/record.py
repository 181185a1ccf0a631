"""The executed batch record as one read model: for the API, the page and the exports.

Every signature appears in its Part 11 manifestation (21 CFR 11.50: printed
name, date and time, meaning) and every superseded version of a corrected
record stays in the record (11.10(e)). QC results and the release decision
come from the domains above through ``gmp_mes.registry.batch_record_sections`` (qc).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import identity.services as identity
from batches import services
from batches.models import Batch, StepRecord
from batches.schemas import (
    RecordDeviationSchema,
    RecordItemSchema,
    RecordSignatureSchema,
    RecordStepSchema,
)
from gmp_mes import audit, registry
from gmp_mes.audit import format_time
from gmp_mes.clock import utcnow
from gmp_mes.errors import NotFound
from gmp_mes.models import Signature, Site, User


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


_SIGNATURE = RecordSignatureSchema()
_DEVIATIONS = RecordDeviationSchema(many=True)
_ITEM = RecordItemSchema()
_ITEMS = RecordItemSchema(many=True)


def signature_dict(signature: Signature | None) -> dict[str, Any] | None:
    """A signature as the record shows it (``gmp_mes.schemas.SignatureOutSchema``)."""
    return None if signature is None else _SIGNATURE.dump(signature)


def _genealogy(session: Session, batch: Batch) -> list[dict[str, Any]]:
    """Starting material and every item of the batch, each with its parents."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    items = [identity.get_item(session, batch.starting_item_id)]
    items += list(identity.items_of_batch(session, batch.batch_number))
    for item in items:
        if item.item_id in seen:
            continue
        seen.add(item.item_id)
        row = _ITEM.dump(item)
        row["parents"] = identity.parents_of(session, item.item_id)
        rows.append(row)
    return rows


def _custody(session: Session, genealogy: list[dict[str, Any]]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for row in genealogy:
        for event in identity.custody_trail(session, row["item_id"]):
            events.append({
                "item_id": row["item_id"],
                "action": event.action,
                "at": _time(event.occurred_at),
                "site_code": event.site_code,
                "location": event.location,
                "by": event.username,
            })
    return sorted(events, key=lambda e: e["at"] or "")


def _patient(session: Session, coi_id: str) -> dict[str, Any] | None:
    """Pseudonymised on the batch record: initials and date of birth with the COI
    (GDPR data minimisation; the COI links to the patient where that is allowed)."""
    try:
        patient = identity.get_patient(session, coi_id)
    except NotFound:  # a missing patient record must not hide the batch record
        return None
    initials = f"{patient.given_name[:1]}.{patient.family_name[:1]}.".upper()
    return {"initials": initials, "date_of_birth": patient.date_of_birth.isoformat(),
            "treatment_site": patient.treatment_site}


def expansion_curve(batch: Batch, records: list[StepRecord]) -> list[dict[str, Any]]:
    """Viable cells and viability per culture day (days since the batch started)."""
    definition = services.definition_of_batch(batch)
    curve = definition.curve
    if curve is None:
        return []
    points = []
    for record in sorted((r for r in records if r.step_code == curve.step),
                         key=lambda r: r.occurrence):
        values = record.values
        points.append({
            "occurrence": record.occurrence,
            "day": round((record.performed_at - batch.started_at).total_seconds() / 86400, 2),
            "performed_at": _time(record.performed_at),
            "viable_cells": values.get(curve.viable_cells),
            "viability": values.get(curve.viability),
        })
    return points


def executed_record(session: Session, batch_number: str, *, full: bool = True,
                    steps_limit: int | None = None,
                    steps_before: int | None = None) -> dict[str, Any]:
    """The executed batch record. ``full`` adds genealogy, custody trail and the curve.

    ``steps_limit``: only the newest ``steps_limit`` step records (before record
    ``steps_before``) are in ``steps``, ``steps_older`` is the cursor of the older ones
    (issue 15: a batch with 1,000 records answers a page, not megabytes); ``done``,
    ``allowed`` and ``next_steps`` still hold for the whole batch. Without it (the
    exports: the record is complete) every record and version is there."""
    batch = services.get_batch(session, batch_number)
    definition = services.definition_of_batch(batch)
    steps_older = None
    if steps_limit is None:
        states = services.step_states(session, batch)
    else:
        states, steps_older = services.paged_step_states(session, batch, limit=steps_limit,
                                                         before=steps_before)
    current = [r for state in states for r in state.records]
    steps_schema = RecordStepSchema(
        lambda r: services.signature_binds(session, r), many=True)
    deviations = services.deviations_of(session, batch)
    starter = session.get(User, batch.started_by)
    approval = batch.process.approval
    items = [identity.get_item(session, item_id)
             for item_id in services.final_product_item_ids(session, batch_number)]
    result: dict[str, Any] = {
        "batch_number": batch.batch_number,
        "coi_id": batch.coi_id,
        "status": batch.status,
        "status_reason": batch.status_reason,
        "process_code": batch.process_code,
        "process_version": batch.process_version,
        "product": definition.name,
        "process": {
            "code": batch.process_code,
            "version": batch.process_version,
            "name": definition.name,
            "digest": batch.process.digest,
            "approval_signature": signature_dict(approval.signature if approval else None),
        },
        "starting_item_id": batch.starting_item_id,
        "site_code": batch.site_code,
        # The zone the PDF shows times in, local first (issue 15); times stay UTC here.
        "site_timezone": session.scalar(
            select(Site.timezone).where(Site.code == batch.site_code)) or "UTC",
        "started_at": _time(batch.started_at),
        "started_by": starter.full_name if starter else None,
        "completed_at": _time(batch.completed_at),
        "next_steps": [s.step.code for s in states if s.allowed],
        "steps": [
            {
                "code": s.step.code,
                "name": s.step.name,
                "index": s.step.index,
                "instructions": s.step.instructions,
                "repeatable": s.step.repeatable,
                "critical": s.step.critical,
                "creates": s.step.creates,
                "consumes_starting_material": s.step.code == definition.consuming_step.code,
                # Steps up to the one that consumes the starting material offer the bag scan.
                "takes_scan": s.step.index <= definition.consuming_step.index,
                # A label check (scans = "final_product"): the bags still to scan.
                "scans": s.step.scans,
                "bags": (services.final_product_item_ids(session, batch_number)
                         if s.step.scans else []),
                # What the step needs (SPEC §11): the lots and equipment its form asks for.
                "materials": [{"material": m.material, "quantity": m.quantity}
                              for m in s.step.needs.materials],
                "equipment": [{"type": e.type} for e in s.step.needs.equipment],
                # The room grade the step needs (SPEC §12): its form asks for the room.
                "room_grade": s.step.needs.room_grade,
                # The training performer and verifier need (SPEC §12): the form checks it.
                "qualification": s.step.needs.qualification,
                "done": s.done,
                "allowed": s.allowed,
                "parameters": [
                    {"code": p.code, "name": p.name, "unit": p.unit, "type": p.type,
                     "min": p.min, "max": p.max, "expected": p.expected,
                     "required": p.required, "limits": p.limits_text(),
                     "severity": p.severity}
                    for p in s.step.parameters
                ],
                "records": steps_schema.dump(s.records),
                "superseded": steps_schema.dump(s.superseded),
            }
            for s in states
        ],
        "steps_older": steps_older,
        "items": _ITEMS.dump(items),
        "deviations": _DEVIATIONS.dump(deviations),
        "qc_specs": [
            {"test": q.test, "method": q.method, "unit": q.unit, "min": q.min, "max": q.max,
             "accept": q.accept, "spec": q.spec_text(),
             "release_before_result": q.release_before_result}
            for q in definition.qc
        ],
        # Written by the domains above (qc); None where no installed domain keeps them.
        "qc": None,
        "release": None,
        "release_blockers": [
            {"code": code, "message": message}
            for code, message in services.release_blockers(session, batch_number)
        ],
    }
    # Sections the domains above keep (qc) or that plug into the steps (materials,
    # equipment); those with a table are drawn on the page and in the PDF as given.
    tables: list[dict[str, Any]] = []
    for source in registry.batch_record_sections.providers():
        for section in source(session, batch_number):
            result[section.key] = section.data
            if section.table is not None:
                tables.append({"key": section.key, "title": section.table.title,
                               "columns": list(section.table.columns),
                               "rows": [list(row) for row in section.table.rows],
                               "empty": section.table.empty})
    result["tables"] = tables
    if full:
        result["patient"] = _patient(session, batch.coi_id)
        result["genealogy"] = _genealogy(session, batch)
        result["custody"] = _custody(session, result["genealogy"])
        result["expansion_curve"] = expansion_curve(batch, current)
        result["generated_at"] = _time(utcnow())
        # An anchor on every exported record: it proves later that no audit event up to
        # this moment (this batch's included) was removed or rewritten.
        anchor = audit.head(session.connection())
        result["audit_head"] = str(anchor) if anchor else None
    return result
