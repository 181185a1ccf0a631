"""Rules of the equipment domain (SPEC §11; 21 CFR 211.67, 211.68, 211.182).

Services take a session, enforce every rule, flush and never commit. Other domains call
only the names re-exported here.

- ``registry``: register, find and list equipment, the view with its computed status
- ``status``: THE status, folded from the logbook (one place)
- ``logbook``: record a signed event (transitions), read the logbook by key
- ``step``: the check at a step (``registry.step_requirements``) and the use log
- ``seams``: the batch record section, the scanned EQP label
- ``labels``: print and preview the EQP label (row locked first), its printed copies
- ``alerts``: calibration due and overdue alerts (the sweep raises them)
"""

from __future__ import annotations

from equipment.models import EquipmentStatus, EventKind
from equipment.services._common import EQUIPMENT_ID, get_equipment, normal_id
from equipment.services.alerts import WARN_BEFORE, calibration_alerts
from equipment.services.labels import (
    equipment_labels,
    preview_equipment_label,
    print_equipment_label,
)
from equipment.services.logbook import EVENT_KINDS, Logbook, logbook, record_event
from equipment.services.registry import (
    EquipmentView,
    equipment_view,
    list_equipment,
    needing_attention,
    register_equipment,
)
from equipment.services.seams import batch_record_sections, scanned_subject
from equipment.services.status import (
    NOTHING_LOGGED,
    Standing,
    calibration_overdue,
    fold,
    standing,
    standings,
    status_of,
    unfit_reasons,
)
from equipment.services.step import (
    EQUIPMENT_KIND_CODE,
    Resolved,
    check_step_equipment,
    resolve_equipment_ref,
    uses_of_batch,
)

__all__ = [
    "EQUIPMENT_ID",
    "EQUIPMENT_KIND_CODE",
    "EVENT_KINDS",
    "NOTHING_LOGGED",
    "WARN_BEFORE",
    "EquipmentStatus",
    "EquipmentView",
    "EventKind",
    "Logbook",
    "Resolved",
    "Standing",
    "batch_record_sections",
    "calibration_alerts",
    "calibration_overdue",
    "check_step_equipment",
    "equipment_labels",
    "equipment_view",
    "fold",
    "get_equipment",
    "list_equipment",
    "logbook",
    "needing_attention",
    "normal_id",
    "preview_equipment_label",
    "print_equipment_label",
    "record_event",
    "register_equipment",
    "resolve_equipment_ref",
    "scanned_subject",
    "standing",
    "standings",
    "status_of",
    "unfit_reasons",
    "uses_of_batch",
]
