"""Rules of the rooms domain (SPEC §12; EU GMP Annex 1 (2022), Part IV §9.4).

Services take a session, enforce every rule, flush and never commit. Other domains call
only the names re-exported here.

- ``rooms``: register, find and list rooms, a room's record by key, what needs attention
- ``clearance``: the two-person line clearance (performed, verified)
- ``step``: the check at a step (``registry.step_requirements`` "room_grade"), the
  occupancy log
- ``em``: EM results judged against the Annex 1 action limits and the site's alert limits;
  an excursion's window and the deviations it opens; the sweep
- ``trend``: the trend chart per room and sample type
- ``seams``: the batch record's rooms and EM excursions sections
"""

from __future__ import annotations

from rooms.models import ClearanceStatus, Grade, SampleType
from rooms.services._common import ROOM_CODE, get_room, normal_code
from rooms.services.clearance import (
    STATEMENT,
    admitting_clearance,
    get_clearance,
    perform_clearance,
    verify_clearance,
)
from rooms.services.em import (
    ACTION_LIMITS,
    SAMPLE_TYPES,
    UNITS,
    EmOutcome,
    Window,
    action_limit,
    affected_uses,
    alert_limit_of,
    alert_limits,
    excursion_window,
    excursions_of_batch,
    judge,
    link_excursion,
    links_of_result,
    record_em_result,
    results_of,
    set_alert_limit,
    sweep_excursions,
    unit_of,
)
from rooms.services.rooms import (
    GRADES,
    Attention,
    RoomRecord,
    RoomView,
    create_room,
    last_use,
    list_rooms,
    needing_attention,
    room_record,
    room_view,
)
from rooms.services.seams import batch_record_sections
from rooms.services.step import check_step_room, grade_admits, uses_of_batch
from rooms.services.trend import trend_chart

__all__ = [
    "ACTION_LIMITS",
    "GRADES",
    "ROOM_CODE",
    "SAMPLE_TYPES",
    "STATEMENT",
    "UNITS",
    "Attention",
    "ClearanceStatus",
    "EmOutcome",
    "Grade",
    "RoomRecord",
    "RoomView",
    "SampleType",
    "Window",
    "action_limit",
    "admitting_clearance",
    "affected_uses",
    "alert_limit_of",
    "alert_limits",
    "batch_record_sections",
    "check_step_room",
    "create_room",
    "excursion_window",
    "excursions_of_batch",
    "get_clearance",
    "get_room",
    "grade_admits",
    "judge",
    "last_use",
    "link_excursion",
    "links_of_result",
    "list_rooms",
    "needing_attention",
    "normal_code",
    "perform_clearance",
    "record_em_result",
    "results_of",
    "room_record",
    "room_view",
    "set_alert_limit",
    "sweep_excursions",
    "trend_chart",
    "unit_of",
    "uses_of_batch",
    "verify_clearance",
]
