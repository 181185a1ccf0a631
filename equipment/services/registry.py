"""The equipment registry: register, find, list, and the view with its computed status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from equipment.models import Equipment, EquipmentUse
from equipment.services._common import EQUIPMENT_ID, get_equipment, normal_id, user_row
from equipment.services.status import (
    NOTHING_LOGGED,
    Standing,
    calibration_overdue,
    standings,
    status_of,
    unfit_reasons,
)
from gmp_mes.accounts import get_site
from gmp_mes.clock import utcnow
from gmp_mes.durations import format_duration, parse_duration
from gmp_mes.errors import AlreadyExists, NotFound, ValidationFailed
from gmp_mes.registry import Reason
from processes.definitions import EQUIPMENT_TYPE


@dataclass(frozen=True)
class EquipmentView:
    """A piece of equipment with what its logbook says at ``at``."""

    equipment_id: str
    type: str
    name: str
    site_code: str
    calibration_interval: str | None
    cleaning_required: bool
    created_at: datetime
    created_by: str
    status: str
    calibration_valid_until: datetime | None
    calibrated_at: datetime | None
    calibration_overdue: bool
    out_of_service_reason: str | None
    last_cleaned_at: datetime | None
    last_maintained_at: datetime | None
    # The batch that used it since its last cleaning (cleaning-required equipment only):
    # another batch must wait for a cleaning (21 CFR 211.67).
    used_since_cleaning_by: str | None
    reasons: list[Reason]
    at: datetime

    @property
    def usable(self) -> bool:
        return not self.reasons


# A calibration schedule longer than this is a typing error, not a schedule.
MAX_INTERVAL = timedelta(days=3653)


def interval_of(text: str | None) -> timedelta | None:
    return parse_duration(text) if text else None


def _checked_interval(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    try:
        interval = parse_duration(text)
    except (ValueError, OverflowError) as exc:
        raise ValidationFailed("calibration_interval is not an ISO 8601 duration",
                               errors={"calibration_interval": [str(exc)]}) from None
    if not timedelta(0) < interval <= MAX_INTERVAL:
        raise ValidationFailed("calibration_interval out of range", errors={
            "calibration_interval": ["must be longer than zero and at most ten years"]})
    return format_duration(interval)


def register_equipment(
    session: Session,
    *,
    equipment_id: str,
    type: str,
    name: str,
    site_code: str,
    user_id: int,
    calibration_interval: str | None = None,
    cleaning_required: bool = False,
) -> Equipment:
    """Register a piece of equipment (admin). Its id is what its EQP label carries."""
    errors: dict[str, list[str]] = {}
    equipment_id = normal_id(equipment_id)
    if not EQUIPMENT_ID.fullmatch(equipment_id):
        errors["equipment_id"] = ["1 to 40 characters: letters, digits, '.' and '-', "
                                  "starting with a letter or digit"]
    type_ = (type or "").strip()
    if not EQUIPMENT_TYPE.fullmatch(type_):
        errors["type"] = ["lower case letters, digits and '_', starting with a letter "
                          "(as process definitions name it, e.g. biosafety_cabinet)"]
    name = (name or "").strip()
    if not name:
        errors["name"] = ["required"]
    try:
        site = get_site(session, site_code or "")
    except NotFound:
        errors["site"] = [f"no site {site_code!r}"]
    try:
        interval = _checked_interval(calibration_interval)
    except ValidationFailed as exc:
        errors.update(exc.errors or {})
    if errors:
        raise ValidationFailed("the equipment cannot be registered", errors=errors)
    if session.get(Equipment, equipment_id) is not None:
        raise AlreadyExists(f"equipment {equipment_id} is already registered")
    user = user_row(session, user_id)
    equipment = Equipment(
        equipment_id=equipment_id, type=type_, name=name, site_code=site.code,
        calibration_interval=interval, cleaning_required=bool(cleaning_required),
        created_by=user.id, created_at=utcnow(),
    )
    session.add(equipment)
    session.flush()
    return equipment


def _last_batches_since_cleaning(session: Session, rows: list[Equipment],
                                 logged: dict[str, Standing]) -> dict[str, str]:
    """Cleaning-required equipment used since its last cleaning: id -> the batch of the
    latest such use (one query for a whole page)."""
    terms = []
    for row in rows:
        if not row.cleaning_required:
            continue
        cleaned_at = logged.get(row.equipment_id, NOTHING_LOGGED).last_cleaned_at
        term = EquipmentUse.equipment_id == row.equipment_id
        terms.append(and_(term, EquipmentUse.used_at >= cleaned_at) if cleaned_at else term)
    if not terms:
        return {}
    latest = (select(func.max(EquipmentUse.id)).where(or_(*terms))
              .group_by(EquipmentUse.equipment_id).scalar_subquery())
    found = session.execute(select(EquipmentUse.equipment_id, EquipmentUse.batch_number)
                            .where(EquipmentUse.id.in_(latest)))
    return {equipment_id: batch_number for equipment_id, batch_number in found}


def _view(equipment: Equipment, standing: Standing, at: datetime,
          used_since_cleaning_by: str | None) -> EquipmentView:
    return EquipmentView(
        equipment_id=equipment.equipment_id, type=equipment.type, name=equipment.name,
        site_code=equipment.site_code, calibration_interval=equipment.calibration_interval,
        cleaning_required=equipment.cleaning_required, created_at=equipment.created_at,
        created_by=equipment.creator.username,
        status=status_of(standing, equipment.calibration_interval, at).value,
        calibration_valid_until=standing.calibration_valid_until,
        calibrated_at=standing.calibrated_at,
        calibration_overdue=calibration_overdue(standing, equipment.calibration_interval, at),
        out_of_service_reason=standing.out_of_service_reason,
        last_cleaned_at=standing.last_cleaned_at,
        last_maintained_at=standing.last_maintained_at,
        used_since_cleaning_by=used_since_cleaning_by,
        reasons=unfit_reasons(equipment.equipment_id, standing,
                              equipment.calibration_interval, at),
        at=at,
    )


def equipment_view(session: Session, equipment_id: str,
                   at: datetime | None = None) -> EquipmentView:
    """The equipment with its status now (or at ``at``)."""
    equipment = get_equipment(session, equipment_id)
    return _views(session, [equipment], at or utcnow())[0]


def list_equipment(session: Session, *, site_code: str | None = None,
                   type: str | None = None, limit: int = 100,
                   offset: int = 0) -> list[EquipmentView]:
    """Equipment in id order with its status (one logbook read for the page)."""
    statement = select(Equipment).order_by(Equipment.equipment_id)
    if site_code:
        statement = statement.where(Equipment.site_code == site_code.strip().upper())
    if type:
        statement = statement.where(Equipment.type == type.strip())
    return _views(session, list(session.scalars(statement.limit(limit).offset(offset))),
                  utcnow())


def _views(session: Session, rows: list[Equipment], at: datetime) -> list[EquipmentView]:
    """The views of a page of equipment: two queries whatever its size."""
    if not rows:
        return []
    logged = standings(session, [row.equipment_id for row in rows])
    dirty = _last_batches_since_cleaning(session, rows, logged)
    return [_view(row, logged.get(row.equipment_id, NOTHING_LOGGED), at,
                  dirty.get(row.equipment_id)) for row in rows]


def needing_attention(session: Session, site_code: str, *,
                      within: timedelta = timedelta(days=14)) -> list[EquipmentView]:
    """The site's equipment that cannot be used now (out of service, calibration overdue,
    waiting for a cleaning) or whose calibration runs out within ``within``: the
    dashboard's list, unusable first."""
    views = list_equipment(session, site_code=site_code, limit=10_000)
    soon = utcnow() + within
    due = [v for v in views if v.reasons or (
        v.calibration_valid_until is not None and v.calibration_valid_until <= soon)]
    return sorted(due, key=lambda v: (v.usable, v.calibration_valid_until or soon,
                                      v.equipment_id))
