"""The schedule API (SPEC §13): bookings, the patient timeline, the vein-to-vein report."""

from __future__ import annotations

from flask_smorest import Blueprint

blp = Blueprint("schedule_api", __name__, url_prefix="/api/v1",
                description="Room bookings, patient timelines and vein-to-vein time")


# --- the patient timeline and the vein-to-vein report (SPEC §13) -------------------------

from typing import Any  # noqa: E402 - appended section

from gmp_mes.http import db_session, roles_required  # noqa: E402
from schedule import services  # noqa: E402
from schedule.schemas import (  # noqa: E402
    TimelineSchema,
    VeinToVeinQuerySchema,
    VeinToVeinReportSchema,
)

REPORT_ROLES = ("qa", "admin", "clinician")


@blp.route("/patients/<coi_id>/timeline", methods=["GET"])
@blp.response(200, TimelineSchema)
@roles_required()
def patient_timeline(coi_id: str) -> services.Timeline:
    """The patient's milestones from enrolment to administration (null until reached),
    the time between consecutive ones and the vein-to-vein time (collection to
    administration). With several collections, batches or bags: the first collection,
    the batch administered first (else the latest started) and the first shipment,
    receipt, thaw and administration of its bags."""
    return services.patient_timeline(db_session(), coi_id)


@blp.route("/reports/vein-to-vein", methods=["GET"])
@blp.arguments(VeinToVeinQuerySchema, location="query")
@blp.response(200, VeinToVeinReportSchema)
@roles_required(*REPORT_ROLES)
def vein_to_vein_report(query: dict[str, Any]) -> services.VeinToVeinReport:
    """Per process version and per process: patients first infused in the period (UTC
    days `from` to `to`, inclusive), median and 90th percentile vein-to-vein time in days
    (numpy's linear percentile, Hyndman-Fan definition 7), and the manufacturing failure
    rate (batches rejected of those first decided in the period). Pseudonymised by COI."""
    return services.vein_to_vein_report(db_session(), query["start"], query["end"])
