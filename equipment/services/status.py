"""The equipment status, computed from the logbook in one place (SPEC §11).

The logbook is folded by :func:`fold`: the latest event of each group decides (service
state: out_of_service / returned_to_service; calibrated; cleaned; maintained). The database
read (:func:`standings`) fetches only those latest events and folds them with the same
function, so the status of one piece of equipment costs one indexed read however long its
logbook grows. :func:`status_of` turns a standing into the status at a time: out of
service wins; calibration overdue when the equipment is under calibration control (an
interval, or a calibration recorded) and no calibration is valid at that time
(21 CFR 211.68).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from sqlalchemy import Select, bindparam, case, func, literal, select
from sqlalchemy.orm import Session

from equipment.models import EquipmentEvent, EquipmentStatus, EventKind
from gmp_mes.localtime import in_utc
from gmp_mes.registry import Reason

SERVICE_KINDS = (EventKind.OUT_OF_SERVICE.value, EventKind.RETURNED_TO_SERVICE.value)


class LoggedEvent(Protocol):
    """What the fold reads of a logbook entry (an ``EquipmentEvent`` is one)."""

    @property
    def kind(self) -> str: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def valid_until(self) -> datetime | None: ...
    @property
    def recorded_at(self) -> datetime: ...


@dataclass(frozen=True)
class Standing:
    """What the logbook says now about one piece of equipment."""

    out_of_service: bool = False
    out_of_service_reason: str | None = None
    calibrated_at: datetime | None = None
    calibration_valid_until: datetime | None = None
    last_cleaned_at: datetime | None = None
    last_maintained_at: datetime | None = None


NOTHING_LOGGED = Standing()


def fold(events: Iterable[LoggedEvent], start: Standing = NOTHING_LOGGED) -> Standing:
    """The standing after ``events`` (oldest first): each event replaces what its group
    said before (a new calibration replaces the previous one's validity, even a longer one)."""
    standing = start
    for event in events:
        kind = event.kind
        if kind == EventKind.OUT_OF_SERVICE:
            standing = replace(standing, out_of_service=True, out_of_service_reason=event.reason)
        elif kind == EventKind.RETURNED_TO_SERVICE:
            standing = replace(standing, out_of_service=False, out_of_service_reason=None)
        elif kind == EventKind.CALIBRATED:
            standing = replace(standing, calibrated_at=event.recorded_at,
                               calibration_valid_until=event.valid_until)
        elif kind == EventKind.CLEANED:
            standing = replace(standing, last_cleaned_at=event.recorded_at)
        elif kind == EventKind.MAINTAINED:
            standing = replace(standing, last_maintained_at=event.recorded_at)
        else:
            raise ValueError(f"unknown logbook event kind {kind!r}")
    return standing


def under_calibration(standing: Standing, calibration_interval: str | None) -> bool:
    """Calibration control applies: a calibration interval, or a calibration recorded
    (a calibration that stated a validity lapses even without an interval)."""
    return calibration_interval is not None or standing.calibration_valid_until is not None


def calibration_overdue(standing: Standing, calibration_interval: str | None,
                        at: datetime) -> bool:
    """No calibration valid at ``at`` for equipment under calibration control."""
    if not under_calibration(standing, calibration_interval):
        return False
    valid_until = standing.calibration_valid_until
    return valid_until is None or valid_until <= at


def status_of(standing: Standing, calibration_interval: str | None,
              at: datetime) -> EquipmentStatus:
    """THE status (SPEC §11): out of service wins, then calibration overdue."""
    if standing.out_of_service:
        return EquipmentStatus.OUT_OF_SERVICE
    if calibration_overdue(standing, calibration_interval, at):
        return EquipmentStatus.CALIBRATION_OVERDUE
    return EquipmentStatus.IN_SERVICE


def unfit_reasons(equipment_id: str, standing: Standing, calibration_interval: str | None,
                  at: datetime) -> list[Reason]:
    """Every reason the equipment may not be used at ``at`` from its logbook (out of
    service and calibration overdue both, not only the status that wins)."""
    reasons: list[Reason] = []
    if standing.out_of_service:
        why = f": {standing.out_of_service_reason}" if standing.out_of_service_reason else ""
        reasons.append({"code": "equipment_out_of_service",
                        "message": f"equipment {equipment_id} is out of service{why}"})
    if calibration_overdue(standing, calibration_interval, at):
        valid_until = standing.calibration_valid_until
        message = (f"equipment {equipment_id} has never been calibrated" if valid_until is None
                   else f"the calibration of equipment {equipment_id} was valid until "
                        f"{in_utc(valid_until)}")
        reasons.append({"code": "calibration_overdue", "message": message})
    return reasons


def _group() -> object:
    """The fold's groups as SQL: the two service kinds are one group."""
    return case((EquipmentEvent.kind.in_(SERVICE_KINDS), literal("service")),
                else_=EquipmentEvent.kind)


def _standings_statement(
    some: bool,
) -> Select[str, str, str | None, datetime | None, datetime]:
    """The latest event of each group, of the equipment named by ``ids`` (or of all).
    Columns only: the fold needs no signature or user (the rows satisfy LoggedEvent)."""
    latest = select(func.max(EquipmentEvent.id)).group_by(
        EquipmentEvent.equipment_id, _group())  # type: ignore[arg-type]
    if some:
        latest = latest.where(EquipmentEvent.equipment_id.in_(bindparam("ids", expanding=True)))
    return (select(EquipmentEvent.equipment_id, EquipmentEvent.kind, EquipmentEvent.reason,
                   EquipmentEvent.valid_until, EquipmentEvent.recorded_at)
            .where(EquipmentEvent.id.in_(latest.scalar_subquery()))
            .order_by(EquipmentEvent.id))


def standings(session: Session, equipment_ids: Sequence[str] | None = None
              ) -> dict[str, Standing]:
    """The standing of each piece of equipment named (every one when None): one query for
    the latest event of each group (index ``ix_equipment_event_equipment_kind``), folded.
    Equipment with an empty logbook is absent (its standing is ``NOTHING_LOGGED``)."""
    if equipment_ids is None:
        rows = session.execute(_STANDINGS_OF_ALL)
    elif not equipment_ids:
        return {}
    else:
        rows = session.execute(_STANDINGS, {"ids": list(equipment_ids)})
    events: dict[str, list[LoggedEvent]] = {}
    for row in rows:
        events.setdefault(row.equipment_id, []).append(row)
    return {equipment_id: fold(found) for equipment_id, found in events.items()}


# Built once: every step that uses equipment reads its standing.
_STANDINGS = _standings_statement(True)
_STANDINGS_OF_ALL = _standings_statement(False)


def standing(session: Session, equipment_id: str) -> Standing:
    return standings(session, [equipment_id]).get(equipment_id, NOTHING_LOGGED)
