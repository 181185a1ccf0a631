"""The signed logbook (21 CFR 211.182, 211.67, 211.68): record an event, read the
logbook (events and uses, newest first, by key)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from equipment.models import EquipmentEvent, EquipmentUse, EventKind
from equipment.services._common import get_equipment, user_row
from equipment.services.registry import interval_of
from equipment.services.status import standing
from gmp_mes import alerts
from gmp_mes.audit import format_time
from gmp_mes.clock import utcnow
from gmp_mes.errors import InvalidTransition, ValidationFailed
from gmp_mes.localtime import in_utc
from gmp_mes.models import Meaning
from gmp_mes.paging import keyset_page
from gmp_mes.signatures import SignatureInput, sign

EVENT_KINDS = tuple(kind.value for kind in EventKind)
# The alerts a calibration answers (equipment.sweep raises them).
CALIBRATION_ALERT_KINDS = ("calibration_due", "calibration_overdue")


def _event_content(equipment_id: str, kind: str, reason: str | None,
                   valid_until: datetime | None, at: datetime) -> dict[str, object]:
    """What the person signs (21 CFR 11.70: the signature binds this exact content)."""
    return {"equipment_id": equipment_id, "kind": kind, "reason": reason,
            "valid_until": format_time(valid_until) if valid_until else None,
            "recorded_at": format_time(at)}


def record_event(
    session: Session,
    equipment_id: str,
    *,
    kind: str,
    user_id: int,
    signature: SignatureInput,
    reason: str | None = None,
    valid_until: datetime | None = None,
) -> EquipmentEvent:
    """One signed logbook entry (operator, qa, admin; meaning ``performed``).

    ``out_of_service`` needs a reason and is refused when the equipment is out of service
    already; ``returned_to_service`` only when it is out of service (409
    ``invalid_transition``). ``calibrated`` takes ``valid_until`` or computes it from the
    calibration interval; no other kind takes one."""
    # One writer per piece of equipment at a time: the transition checked below holds.
    equipment = get_equipment(session, equipment_id, for_update=True)
    now = utcnow()
    errors: dict[str, list[str]] = {}
    if kind not in EVENT_KINDS:
        errors["kind"] = [f"must be one of: {', '.join(EVENT_KINDS)}"]
    reason = reason.strip() if reason and reason.strip() else None
    if kind == EventKind.OUT_OF_SERVICE and reason is None:
        errors["reason"] = ["taking equipment out of service needs a reason"]
    if valid_until is not None and kind != EventKind.CALIBRATED:
        errors["valid_until"] = ["only a calibration has a validity"]
    if kind == EventKind.CALIBRATED:
        if valid_until is not None:
            if valid_until.tzinfo is None:
                valid_until = valid_until.replace(tzinfo=UTC)
            if valid_until <= now:
                errors["valid_until"] = ["must be later than now"]
        else:
            interval = interval_of(equipment.calibration_interval)
            if interval is None:
                errors["valid_until"] = [f"equipment {equipment.equipment_id} has no "
                                         "calibration interval: state until when the "
                                         "calibration is valid"]
            else:
                valid_until = now + interval
    if errors:
        raise ValidationFailed("the logbook entry cannot be recorded", errors=errors)
    current = standing(session, equipment.equipment_id)
    if kind == EventKind.OUT_OF_SERVICE and current.out_of_service:
        raise InvalidTransition(f"equipment {equipment.equipment_id} is out of service already")
    if kind == EventKind.RETURNED_TO_SERVICE and not current.out_of_service:
        raise InvalidTransition(f"equipment {equipment.equipment_id} is not out of service")
    user = user_row(session, user_id)
    signed = sign(session, user, signature, entity_type="equipment_event",
                  entity_id=f"{equipment.equipment_id}:{kind}",
                  content=_event_content(equipment.equipment_id, kind, reason,
                                         valid_until, now),
                  meanings={Meaning.PERFORMED.value})
    event = EquipmentEvent(equipment_id=equipment.equipment_id, kind=kind, reason=reason,
                           valid_until=valid_until, signature_id=signed.id,
                           recorded_by=user.id, recorded_at=now)
    session.add(event)
    session.flush()
    if kind == EventKind.CALIBRATED:
        # The calibration answers the due and overdue alerts of the one before.
        alerts.resolve_for_subject(session, "equipment", equipment.equipment_id,
                                   CALIBRATION_ALERT_KINDS,
                                   f"calibrated, valid until {in_utc(valid_until)}"
                                   if valid_until else "calibrated")
    return event


@dataclass(frozen=True)
class Logbook:
    """One page of each trail, newest first; ``*_older`` is the cursor of older ones."""

    events: list[EquipmentEvent]
    events_older: int | None
    uses: list[EquipmentUse]
    uses_older: int | None


def logbook(session: Session, equipment_id: str, *, events_limit: int = 100,
            events_before: int | None = None, uses_limit: int = 100,
            uses_before: int | None = None) -> Logbook:
    """The logbook of one piece of equipment by key: a page costs the same at 20 entries
    or 20,000 (indexes on equipment_id, id)."""
    equipment = get_equipment(session, equipment_id)
    events, events_older = keyset_page(
        session, select(EquipmentEvent).where(
            EquipmentEvent.equipment_id == equipment.equipment_id),
        EquipmentEvent.id, limit=events_limit, before=events_before)
    uses, uses_older = keyset_page(
        session, select(EquipmentUse).where(EquipmentUse.equipment_id == equipment.equipment_id),
        EquipmentUse.id, limit=uses_limit, before=uses_before)
    return Logbook(list(reversed(events)), events_older, list(reversed(uses)), uses_older)
