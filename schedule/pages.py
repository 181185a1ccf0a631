"""Pages of the schedule domain (SPEC §13): ``/schedule`` and the vein-to-vein report."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("schedule", __name__, template_folder="templates")


# --- the patient timeline and the vein-to-vein report (SPEC §13, §7b) --------------------

import csv  # noqa: E402 - appended section
import io  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

from flask import render_template, request  # noqa: E402
from markupsafe import Markup  # noqa: E402
from marshmallow import ValidationError  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from werkzeug.wrappers import Response  # noqa: E402

from gmp_mes import charts  # noqa: E402
from gmp_mes.accounts import Principal  # noqa: E402
from gmp_mes.errors import ValidationFailed  # noqa: E402
from gmp_mes.http import db_session, roles_required  # noqa: E402
from gmp_mes.schemas import field_errors  # noqa: E402
from schedule import services  # noqa: E402
from schedule.api import REPORT_ROLES  # noqa: E402
from schedule.schemas import VeinToVeinQuerySchema  # noqa: E402

span_text = services.span_text

MILESTONE_NAMES = {
    "enrolled": "Enrolled", "collected": "Collected (apheresis)",
    "batch_started": "Batch started", "filled": "Filled", "released": "Released",
    "shipped": "Shipped", "received": "Received", "thawed": "Thawed",
    "administered": "Administered",
}


def timeline_section(session: Session, user: Principal, coi_id: str
                     ) -> tuple[str, Markup] | None:
    """Provider of ``registry.patient_sections`` (owner "timeline"): the milestones with
    the time since the previous one, for every role (as GET /patients/{coi}/timeline)."""
    timeline = services.patient_timeline(session, coi_id)
    html = render_template("schedule/timeline_section.html", timeline=timeline,
                           names=MILESTONE_NAMES, span_text=span_text,
                           since={d.end: d.delta for d in timeline.durations})
    return "Timeline", Markup(html)


def _report_query() -> tuple[services.VeinToVeinReport | None, dict[str, list[str]]]:
    """The report the query asks for, or the field errors (bad dates, from after to)."""
    try:
        query = VeinToVeinQuerySchema().load(request.args)
    except ValidationError as exc:
        return None, field_errors(exc)
    try:
        return services.vein_to_vein_report(db_session(), query["start"], query["end"]), {}
    except ValidationFailed as exc:
        return None, exc.errors or {}


@bp.route("/reports/vein-to-vein")
@roles_required(*REPORT_ROLES)
def vein_to_vein_page() -> str | tuple[str, int]:
    report, errors = _report_query()
    if report is None:  # the form again with the errors, and this year's report
        report = services.vein_to_vein_report(db_session())
    page = render_template(
        "schedule/vein_to_vein.html", report=report, errors=errors,
        asked={k: request.args.get(k, "") for k in ("from", "to")},
        distribution=charts.img_tag(services.distribution_chart(report)),
        failures=charts.img_tag(services.failure_chart(report)))
    return (page, 422) if errors else page


def _csv(rows: list[list[str]], name: str) -> Response:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds")


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def patient_rows(report: services.VeinToVeinReport) -> list[list[str]]:
    """One row per patient first infused in the period, by COI only (no name, date of
    birth or MRN); times in UTC, vein-to-vein in days."""
    rows = [["coi_id", "process_code", "process_version", "batch_number",
             "collected_at_utc", "administered_at_utc", "vein_to_vein_days"]]
    rows += [[p.coi_id, p.process_code, str(p.process_version), p.batch_number,
              _utc(p.collected_at), _utc(p.administered_at),
              f"{p.days:.3f}"] for p in report.patients]
    return rows


def summary_rows(report: services.VeinToVeinReport) -> list[list[str]]:
    """One row per process version and per process (version empty: all versions)."""
    def fixed(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    rows = [["process_code", "process_version", "patients", "median_days", "p90_days",
             "decided", "rejected", "failure_rate"]]
    rows += [[s.process_code, _cell(s.process_version), str(s.count), fixed(s.median_days),
              fixed(s.p90_days), str(s.decided), str(s.rejected), fixed(s.failure_rate)]
             for s in report.processes]
    return rows


def _csv_report() -> services.VeinToVeinReport:
    report, errors = _report_query()
    if report is None:
        raise ValidationFailed("bad report query", errors=errors)
    return report


@bp.route("/reports/vein-to-vein.csv")
@roles_required(*REPORT_ROLES)
def vein_to_vein_csv() -> Response:
    """The patients of the period (one CSV: a spreadsheet reads one table per file)."""
    report = _csv_report()
    return _csv(patient_rows(report), f"vein-to-vein-{report.start}-{report.end}.csv")


@bp.route("/reports/vein-to-vein-summary.csv")
@roles_required(*REPORT_ROLES)
def vein_to_vein_summary_csv() -> Response:
    """The per-process figures of the period."""
    report = _csv_report()
    return _csv(summary_rows(report),
                f"vein-to-vein-summary-{report.start}-{report.end}.csv")


# --- room bookings (SPEC §13): /schedule, /bookings/<id>, the patient page's section -----

from datetime import date, time  # noqa: E402
from zoneinfo import ZoneInfo  # noqa: E402

from flask import flash, g, redirect, url_for  # noqa: E402

import rooms.services as rooms  # noqa: E402
from gmp_mes.errors import DomainError  # noqa: E402
from gmp_mes.http import form_refusal  # noqa: E402
from gmp_mes.localtime import parse_local  # noqa: E402
from gmp_mes.schemas import form_fields  # noqa: E402
from schedule.schemas import BookingInSchema, BookingReasonSchema, RescheduleSchema  # noqa: E402

TIME_FIELDS = ("apheresis_at", "planned_infusion_at", "manufacturing_start")
DEFAULT_WEEKS, MAX_WEEKS = 6, 26
WARNING_NAMES = {
    "hold_time_exceeded": "Hold time exceeded",
    "release_after_infusion": "Release after the planned infusion",
    "qc_result_after_infusion": "QC result after the planned infusion",
    "expires_before_infusion": "Expires before the planned infusion",
}


def _zone() -> ZoneInfo:
    return ZoneInfo(g.user.site.timezone)


def _local_times(fields: dict[str, str], errors: dict[str, list[str]]) -> dict[str, str]:
    """The form's times (typed in the user's site time) as ISO times with their offset."""
    for name in TIME_FIELDS:
        raw = fields.pop(name, "").strip()
        if not raw:
            continue
        try:
            fields[name] = parse_local(raw, _zone()).isoformat()
        except ValueError:
            errors[name] = ["not a date and time: type it like 2026-12-01 08:30"]
    return fields


def _period(args: Any) -> tuple[date, int, dict[str, list[str]]]:
    """The weeks shown: from the Monday of this week (or `from`), `weeks` of them."""
    errors: dict[str, list[str]] = {}
    today = datetime.now(UTC).date()
    start = today - timedelta(days=today.weekday())
    weeks = DEFAULT_WEEKS
    if args.get("from"):
        try:
            start = date.fromisoformat(args["from"])
        except ValueError:
            errors["from"] = ["not a date: use 2026-12-01"]
    if args.get("weeks"):
        try:
            weeks = int(args["weeks"])
            if not 1 <= weeks <= MAX_WEEKS:
                raise ValueError
        except ValueError:
            errors["weeks"] = [f"a whole number of weeks, 1 to {MAX_WEEKS}"]
            weeks = DEFAULT_WEEKS
    return start, weeks, errors


def _schedule_page(*, errors: dict[str, list[str]] | None = None, error: str | None = None,
                   form: Any = None, status: int = 200) -> tuple[str, int]:
    session = db_session()
    start, weeks, period_errors = _period(request.args)
    low = datetime.combine(start, time(), UTC)
    high = low + timedelta(weeks=weeks)
    room_filter = request.args.get("room") or None
    all_rooms = rooms.list_rooms(session)
    shown = [r.code for r in all_rooms if room_filter in (None, r.code)]
    bookings = services.list_bookings(session, start=low, end=high, room=room_filter)
    chart = services.schedule_chart(bookings, shown, low, high, _zone())
    return render_template(
        "schedule/schedule.html", bookings=bookings, chart=charts.img_tag(chart),
        codes=services.booking_codes(bookings), warning_names=WARNING_NAMES,
        rooms=all_rooms, processes=services.bookable_processes(session),
        start=start, weeks=weeks, room=room_filter or "",
        period_errors=period_errors, errors=errors or {}, error=error, form=form or {},
        can_book=g.user.has_role(*services.BOOKING_ROLES),
        earlier=(start - timedelta(weeks=weeks)).isoformat(),
        later=(start + timedelta(weeks=weeks)).isoformat(),
    ), status


@bp.route("/schedule")
@roles_required()
def schedule_page() -> tuple[str, int]:
    """Rooms over weeks (SPEC §7b `/schedule`): the booked windows with their warnings."""
    return _schedule_page()


@bp.route("/schedule", methods=["POST"])
@roles_required(*services.BOOKING_ROLES)
def book_room() -> Response | tuple[str, int]:
    errors: dict[str, list[str]] = {}
    fields = _local_times(form_fields(request.form), errors)
    data: dict[str, Any] = {}
    try:
        data = BookingInSchema().load(fields)
    except ValidationError as exc:
        for name, messages in field_errors(exc).items():  # an unreadable time: its own
            errors.setdefault(name, messages)
    if errors:
        return _schedule_page(errors=errors, form=request.form, status=422)
    try:
        booking = services.book_room(db_session(), user=g.user, **data)
    except DomainError as exc:
        refused, message = form_refusal(exc)
        return _schedule_page(errors=refused, error=message, form=request.form,
                              status=exc.status)
    warned = services.warnings_of(booking)
    flash(f"room {booking.room_code} booked for {booking.coi_id}"
          + (f" with {len(warned)} warning{'s' if len(warned) > 1 else ''}" if warned else ""),
          "warn" if warned else "ok")
    return redirect(url_for("schedule.booking_page", booking_id=booking.id))


def _booking_page(booking_id: int, *, errors: dict[str, list[str]] | None = None,
                  error: str | None = None, form: Any = None, which: str | None = None,
                  status: int = 200) -> tuple[str, int]:
    session = db_session()
    booking = services.get_booking(session, booking_id)
    tz = _zone()
    return render_template(
        "schedule/booking.html", booking=booking, warnings=services.warnings_of(booking),
        warning_names=WARNING_NAMES, rooms=rooms.list_rooms(session),
        can_change=(services.can_change(booking)
                    and g.user.has_role(*services.BOOKING_ROLES)),
        local_input=lambda moment: moment.astimezone(tz).strftime("%Y-%m-%dT%H:%M"),
        errors=errors or {}, error=error, form=form or {}, which=which), status


@bp.route("/bookings/<int:booking_id>")
@roles_required()
def booking_page(booking_id: int) -> tuple[str, int]:
    return _booking_page(booking_id)


@bp.route("/bookings/<int:booking_id>/cancel", methods=["POST"])
@roles_required(*services.BOOKING_ROLES)
def cancel_booking(booking_id: int) -> Response | tuple[str, int]:
    try:
        data = BookingReasonSchema().load(form_fields(request.form))
    except ValidationError as exc:
        return _booking_page(booking_id, errors=field_errors(exc), form=request.form,
                             which="cancel", status=422)
    try:
        services.cancel_booking(db_session(), booking_id, user=g.user, reason=data["reason"])
    except DomainError as exc:
        refused, message = form_refusal(exc)
        return _booking_page(booking_id, errors=refused, error=message, form=request.form,
                             which="cancel", status=exc.status)
    flash(f"booking {booking_id} cancelled", "ok")
    return redirect(url_for("schedule.booking_page", booking_id=booking_id))


@bp.route("/bookings/<int:booking_id>/reschedule", methods=["POST"])
@roles_required(*services.BOOKING_ROLES)
def reschedule_booking(booking_id: int) -> Response | tuple[str, int]:
    errors: dict[str, list[str]] = {}
    fields = _local_times(form_fields(request.form), errors)
    data: dict[str, Any] = {}
    try:
        data = RescheduleSchema().load(fields)
    except ValidationError as exc:
        for name, messages in field_errors(exc).items():  # an unreadable time: its own
            errors.setdefault(name, messages)
    if errors:
        return _booking_page(booking_id, errors=errors, form=request.form, which="reschedule",
                             status=422)
    try:
        booking = services.reschedule_booking(db_session(), booking_id, user=g.user, **data)
    except DomainError as exc:
        refused, message = form_refusal(exc)
        return _booking_page(booking_id, errors=refused, error=message, form=request.form,
                             which="reschedule", status=exc.status)
    flash(f"booking {booking_id} rescheduled (revision {booking.revision})", "ok")
    return redirect(url_for("schedule.booking_page", booking_id=booking_id))


def bookings_section(session: Session, user: Principal, coi_id: str
                     ) -> tuple[str, Markup] | None:
    """Provider of ``registry.patient_sections`` (owner "bookings"): the patient's room
    bookings with their warnings; none shown when the patient has none."""
    bookings = services.list_bookings(session, coi_id=coi_id)
    if not bookings:
        return None
    html = render_template("schedule/bookings_section.html", bookings=bookings,
                           codes=services.booking_codes(bookings))
    return "Room bookings", Markup(html)
