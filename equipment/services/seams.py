"""What equipment answers through the seams of gmp_mes.registry: the equipment section of
the executed batch record, and what a scanned EQP label names at the scan station."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from equipment.models import Equipment, EquipmentUse
from equipment.services._common import normal_id
from equipment.services.registry import equipment_view
from equipment.services.step import EQUIPMENT_KIND_CODE
from gmp_mes.audit import format_time
from gmp_mes.errors import NotFound
from gmp_mes.localtime import local_and_utc, zone
from gmp_mes.models import Site
from gmp_mes.registry import RecordSection, RecordTable, ScannedSubject

RECORD_COLUMNS = ("Step", "Record", "Equipment", "Type", "Name", "Used by", "Used at")


def batch_record_sections(session: Session, batch_number: str) -> list[RecordSection]:
    """The equipment used by a batch (21 CFR 211.182, backward traceability): JSON for the
    export, a table (site local time with UTC) for the page and the PDF."""
    rows = session.execute(
        select(EquipmentUse, Equipment, Site.timezone)
        .join(Equipment, Equipment.equipment_id == EquipmentUse.equipment_id)
        .join(Site, Site.code == Equipment.site_code)
        .where(EquipmentUse.batch_number == batch_number)
        .order_by(EquipmentUse.id)).all()
    data: list[dict[str, object]] = []
    table: list[tuple[str, ...]] = []
    for use, equipment, timezone in rows:
        data.append({
            "equipment_id": use.equipment_id, "type": equipment.type, "name": equipment.name,
            "step_code": use.step_code, "step_record_id": use.step_record_id,
            "used_by": use.user.username, "used_at": format_time(use.used_at),
        })
        table.append((use.step_code, str(use.step_record_id), use.equipment_id,
                      equipment.type.replace("_", " "), equipment.name,
                      f"{use.user.full_name} ({use.user.username})",
                      local_and_utc(use.used_at, zone(timezone))))
    return [RecordSection("equipment", data, RecordTable(
        "Equipment used", RECORD_COLUMNS, tuple(table), empty="no equipment recorded"))]


def scanned_subject(session: Session, kind_code: str, subject_id: str) -> ScannedSubject | None:
    """A verified EQP label at the scan station: the equipment, its status now and why it
    may not be used (out of service, calibration overdue). None for other kinds."""
    if kind_code != EQUIPMENT_KIND_CODE:
        return None
    try:
        view = equipment_view(session, subject_id)
    except NotFound:
        return ScannedSubject(kind="equipment", subject_id=normal_id(subject_id),
                              title=f"equipment {normal_id(subject_id)}", status="unknown",
                              expires_at=None,
                              reasons=[{"code": "equipment_unknown",
                                        "message": f"no equipment {subject_id}"}])
    return ScannedSubject(
        kind="equipment", subject_id=view.equipment_id,
        title=f"{view.name} ({view.type.replace('_', ' ')}) {view.equipment_id}",
        status=view.status, expires_at=view.calibration_valid_until, reasons=view.reasons,
        url=f"/equipment/{view.equipment_id}")
