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


# --- room bookings (SPEC §13) ----------------------------------------------------------

from flask import g  # noqa: E402

from schedule.models import RoomBooking  # noqa: E402
from schedule.schemas import (  # noqa: E402
    BookingInSchema,
    BookingQuerySchema,
    BookingReasonSchema,
    BookingSchema,
    RescheduleSchema,
)


@blp.route("/bookings", methods=["POST"])
@blp.arguments(BookingInSchema)
@blp.response(201, BookingSchema)
@roles_required(*services.BOOKING_ROLES)
def book_room(body: dict[str, Any]) -> RoomBooking:
    """Book a manufacturing room for a patient's batch: the windows come from the newest
    QA-approved version of the process (its `[schedule]`), the warnings from its shelf
    lives, hold time and tests against the planned infusion (the booking is still made).
    409 `room_booked` (naming the other booking) when the room's manufacturing window
    overlaps another booked one; 422 for an unknown patient, process or room, a process
    without `[schedule]`, a room of a grade some step cannot use, or times out of order."""
    return services.book_room(db_session(), user=g.user, **body)


@blp.route("/bookings", methods=["GET"])
@blp.arguments(BookingQuerySchema, location="query")
@blp.response(200, BookingSchema(many=True))
@roles_required()
def list_bookings(query: dict[str, Any]) -> list[RoomBooking]:
    """Bookings whose manufacturing window reaches the UTC days `from` to `to`
    (inclusive; open when absent), by window start; `room`, `coi_id` and `status`
    narrow them (at most 500)."""
    start, end = services.day_bounds(query["start"], query["end"])
    return services.list_bookings(db_session(), start=start, end=end, room=query["room"],
                                  coi_id=query["coi_id"], status=query["status"])


@blp.route("/bookings/<int:booking_id>", methods=["GET"])
@blp.response(200, BookingSchema)
@roles_required()
def get_booking(booking_id: int) -> RoomBooking:
    """One booking."""
    return services.get_booking(db_session(), booking_id)


@blp.route("/bookings/<int:booking_id>/cancel", methods=["POST"])
@blp.arguments(BookingReasonSchema)
@blp.response(200, BookingSchema)
@roles_required(*services.BOOKING_ROLES)
def cancel_booking(body: dict[str, Any], booking_id: int) -> RoomBooking:
    """Cancel a booking with a reason (audited); frees the room's window. 409
    `booking_cancelled` when already cancelled, `booking_in_use` once a batch started
    on it."""
    return services.cancel_booking(db_session(), booking_id, user=g.user,
                                   reason=body["reason"])


@blp.route("/bookings/<int:booking_id>/reschedule", methods=["POST"])
@blp.arguments(RescheduleSchema)
@blp.response(200, BookingSchema)
@roles_required(*services.BOOKING_ROLES)
def reschedule_booking(body: dict[str, Any], booking_id: int) -> RoomBooking:
    """New times or room for a booking with a reason (audited; earlier values stay in
    the trail): the plan and warnings are computed again on the version it was booked
    with, 409 `room_booked` on an overlap."""
    return services.reschedule_booking(db_session(), booking_id, user=g.user, **body)
