"""Pages of the rooms domain (SPEC §7b, §12): the room list with the register and alert
limit forms (admin), the room page with its occupancy history, clearances, EM results and
the forms to clear, verify and enter results, and the EM trend page per sample type.

Views parse forms with schemas, call ``rooms.services`` and render; a refused form
re-renders with what was typed (never a password), the message at its field; a success
redirects (post/redirect/get).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from markupsafe import Markup
from marshmallow import ValidationError, fields, validate
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from gmp_mes import charts, paging
from gmp_mes.accounts import Principal, list_sites
from gmp_mes.errors import DomainError, NotFound
from gmp_mes.http import db_session, form_refusal, roles_required
from gmp_mes.localtime import parse_local, zone_of
from gmp_mes.models import Meaning
from gmp_mes.schemas import StrictSchema, field_errors, form_fields
from gmp_mes.signatures import SignatureInput
from rooms import services
from rooms.schemas import GRADES, SAMPLE_TYPES, EmAlertLimitInSchema, RoomInSchema

bp = Blueprint("rooms", __name__, template_folder="templates")

PAGE = 50
VIEW_ROLES = ("operator", "qa", "qc", "admin")
CLEAR_ROLES = ("operator",)
VERIFY_ROLES = ("operator", "qa")
EM_ROLES = ("qc", "operator")


class RoomFormSchema(RoomInSchema):
    """The register form: the API's fields."""


class AlertLimitFormSchema(EmAlertLimitInSchema):
    alert_limit = fields.Integer(required=True, validate=validate.Range(
        min=1, max=10_000, error="a whole number of cfu, 1 or more"),
        error_messages={"invalid": "a whole number of cfu"})


class SignFormSchema(StrictSchema):
    password = fields.String(required=True, validate=validate.Length(min=1, max=200),
                             error_messages={"required": "type your password to sign"})
    signature_reason = fields.String(load_default=None, validate=validate.Length(max=2000))


class EmFormSchema(SignFormSchema):
    sample_type = fields.String(required=True, validate=validate.OneOf(
        SAMPLE_TYPES, error="choose the sample type"))
    value = fields.Integer(required=True, strict=False, validate=validate.Range(
        min=0, max=1_000_000, error="colony-forming units: 0 to 1,000,000"),
        error_messages={"invalid": "a whole number of colonies (cfu)",
                        "required": "the count, in cfu"})
    sampled_at = fields.String(required=True, validate=validate.Length(max=40),
                               error_messages={"required": "when the sample was taken"})
    location = fields.String(load_default=None, validate=validate.Length(max=200))


def search_target(session: Session, user: Principal, text: str) -> str | None:
    """The header search box: a room code opens its page."""
    code = services.normal_code(text)
    if not user.has_role(*VIEW_ROLES) or not services.ROOM_CODE.fullmatch(code):
        return None
    try:
        services.get_room(session, code)
    except NotFound:
        return None
    return url_for("rooms.room_page", code=code)


def _signature(data: dict[str, Any], meaning: str) -> SignatureInput:
    return SignatureInput(password=data["password"], meaning=meaning,
                          reason=data["signature_reason"])


def _kept(*names: str) -> dict[str, str]:
    return {name: request.form.get(name, "") for name in names}


# --- the list ------------------------------------------------------------------------------

def _list(*, errors: dict[str, list[str]] | None = None, error: str | None = None,
          form: Any = None, which: str | None = None, status: int = 200) -> str | tuple[str, int]:
    session = db_session()
    number, size = paging.requested(request.args)
    rows, page = paging.cut(services.list_rooms(
        session, limit=size + 1, offset=(number - 1) * size), number, size)
    admin = g.user.has_role("admin")
    html = render_template(
        "rooms/list.html", rows=rows, page=page, errors=errors or {}, error=error,
        form=form or {}, which=which, sites=[s.code for s in list_sites(session)] if admin
        else [], default_site=g.user.site.code, grades=GRADES, sample_types=SAMPLE_TYPES,
        limits=services.alert_limits(session), action_limits=services.ACTION_LIMITS,
        units=services.UNITS)
    return (html, status) if status != 200 else html


@bp.route("/rooms", methods=["GET", "POST"])
@roles_required(*VIEW_ROLES)
def room_list() -> str | Response | tuple[str, int]:
    if request.method == "GET":
        return _list()
    if not g.user.has_role("admin"):
        abort(403)
    form = _kept("code", "site", "grade", "name")
    try:
        data = RoomFormSchema().load(form_fields(request.form))
    except ValidationError as exc:
        return _list(errors=field_errors(exc), form=form, which="room", status=422)
    try:
        room = services.create_room(db_session(), code=data["code"], site_code=data["site"],
                                    grade=data["grade"], name=data["name"], user_id=g.user.id)
    except DomainError as exc:
        errors, error = form_refusal(exc)
        return _list(errors=errors, error=error, form=form, which="room", status=exc.status)
    flash(f"room {room.code} (grade {room.grade}) registered", "ok")
    return redirect(url_for("rooms.room_page", code=room.code))


@bp.route("/rooms/alert-limits", methods=["POST"])
@roles_required("admin")
def alert_limit_form() -> str | Response | tuple[str, int]:
    form = _kept("site", "grade", "sample_type", "alert_limit")
    try:
        data = AlertLimitFormSchema().load(form_fields(request.form))
    except ValidationError as exc:
        return _list(errors=field_errors(exc), form=form, which="limit", status=422)
    try:
        row = services.set_alert_limit(db_session(), site_code=data["site"],
                                       grade=data["grade"], sample_type=data["sample_type"],
                                       alert_limit=data["alert_limit"], user_id=g.user.id)
    except DomainError as exc:
        errors, error = form_refusal(exc)
        return _list(errors=errors, error=error, form=form, which="limit", status=exc.status)
    flash(f"alert limit {row.alert_limit} cfu set for grade {row.grade} "
          f"{row.sample_type.replace('_', ' ')} at {row.site_code}", "ok")
    return redirect(url_for("rooms.room_list"))


# --- the room ------------------------------------------------------------------------------

def _page(code: str, *, errors: dict[str, list[str]] | None = None, error: str | None = None,
          form: Any = None, which: str | None = None,
          status: int = 200) -> str | tuple[str, int]:
    session = db_session()
    view = services.room_view(session, code)
    record = services.room_record(
        session, view.code, limit=PAGE, uses_before=paging.cursor(request.args, "uses_before"),
        clearances_before=paging.cursor(request.args, "clearances_before"),
        em_before=paging.cursor(request.args, "em_before"))
    html = render_template(
        "rooms/room.html", view=view, record=record, errors=errors or {}, error=error,
        form=form or {}, which=which, sample_types=SAMPLE_TYPES, units=services.UNITS,
        limits=services.ACTION_LIMITS[view.grade], statement=services.STATEMENT,
        can_clear=g.user.has_role(*CLEAR_ROLES), can_verify=g.user.has_role(*VERIFY_ROLES),
        can_em=g.user.has_role(*EM_ROLES))
    return (html, status) if status != 200 else html


@bp.route("/rooms/<code>")
@roles_required(*VIEW_ROLES)
def room_page(code: str) -> str | tuple[str, int]:
    return _page(code)


@bp.route("/rooms/<code>/clearances", methods=["POST"])
@roles_required(*CLEAR_ROLES)
def clearance_form(code: str) -> str | Response | tuple[str, int]:
    form = _kept("signature_reason")
    try:
        data = SignFormSchema().load(form_fields(request.form))
    except ValidationError as exc:
        return _page(code, errors=field_errors(exc), form=form, which="clear", status=422)
    try:
        clearance = services.perform_clearance(db_session(), code, user_id=g.user.id,
                                               signature=_signature(data, Meaning.PERFORMED))
    except DomainError as exc:
        errors, error = form_refusal(exc)
        return _page(code, errors=errors, error=error, form=form, which="clear",
                     status=exc.status)
    flash(f"line clearance {clearance.id} of room {clearance.room_code} recorded: a second "
          "person verifies it", "ok")
    return redirect(url_for("rooms.room_page", code=clearance.room_code) + "#clearances")


@bp.route("/rooms/<code>/clearances/<int:clearance_id>/verify", methods=["POST"])
@roles_required(*VERIFY_ROLES)
def verify_form(code: str, clearance_id: int) -> str | Response | tuple[str, int]:
    form = {**_kept("signature_reason"), "clearance": str(clearance_id)}
    try:
        data = SignFormSchema().load(form_fields(request.form))
    except ValidationError as exc:
        return _page(code, errors=field_errors(exc), form=form, which="verify", status=422)
    try:
        clearance = services.verify_clearance(
            db_session(), services.normal_code(code), clearance_id, user_id=g.user.id,
            signature=_signature(data, Meaning.VERIFIED))
    except DomainError as exc:
        errors, error = form_refusal(exc)
        return _page(code, errors=errors, error=error, form=form, which="verify",
                     status=exc.status)
    flash(f"line clearance {clearance.id} verified: room {clearance.room_code} may serve "
          "another patient", "ok")
    return redirect(url_for("rooms.room_page", code=clearance.room_code) + "#clearances")


@bp.route("/rooms/<code>/em-results", methods=["POST"])
@roles_required(*EM_ROLES)
def em_form(code: str) -> str | Response | tuple[str, int]:
    form = _kept("sample_type", "value", "sampled_at", "location", "signature_reason")
    try:
        data = EmFormSchema().load(form_fields(request.form))
    except ValidationError as exc:
        return _page(code, errors=field_errors(exc), form=form, which="em", status=422)
    try:
        sampled_at = parse_local(data["sampled_at"], zone_of(g.user))
    except ValueError:
        return _page(code, form=form, which="em", status=422, errors={
            "sampled_at": ["a date and time, e.g. 2026-12-01T09:30"]})
    try:
        outcome = services.record_em_result(
            db_session(), code, sample_type=data["sample_type"], value=data["value"],
            sampled_at=sampled_at, location=data["location"], user_id=g.user.id,
            signature=_signature(data, Meaning.PERFORMED))
    except DomainError as exc:
        errors, error = form_refusal(exc)
        return _page(code, errors=errors, error=error, form=form, which="em",
                     status=exc.status)
    result = outcome.result
    if not result.passed:
        flash(f"EM result {result.id} FAILED the action limit {result.action_limit}: "
              f"excursion alerted; deviations opened: "
              f"{', '.join(outcome.deviations) or 'none (no batch in the window)'}", "warn")
    elif outcome.warning:
        flash(f"EM result {result.id} passed with a warning: {outcome.warning}", "warn")
    else:
        flash(f"EM result {result.id} recorded: passed", "ok")
    return redirect(url_for("rooms.em_page", code=result.room_code,
                            sample_type=result.sample_type))


@bp.route("/rooms/<code>/em/<sample_type>")
@roles_required(*VIEW_ROLES)
def em_page(code: str, sample_type: str) -> str:
    """The trend of one sample type in a room: the chart and the results, newest first."""
    if sample_type not in SAMPLE_TYPES:
        abort(404)
    session = db_session()
    view = services.room_view(session, code)
    record = services.room_record(session, view.code, limit=PAGE, sample_type=sample_type,
                                  em_before=paging.cursor(request.args, "em_before"))
    chart = services.trend_chart(session, view.code, sample_type)
    return render_template(
        "rooms/em.html", view=view, record=record, sample_type=sample_type,
        unit=services.unit_of(sample_type), sample_types=SAMPLE_TYPES,
        chart=None if chart.empty else charts.img_tag(chart), chart_alt=chart.alt,
        action_limit=services.action_limit(view.grade, sample_type),
        alert_limit=services.alert_limit_of(session, view.site_code, view.grade, sample_type))


def dashboard_panel(session: Session, user: Principal) -> tuple[str, Markup] | None:
    """Rooms of the user's site needing someone: clearances waiting for a second person,
    sample types whose latest result failed (operators, QA, QC)."""
    if not user.has_role("operator", "qa", "qc"):
        return None
    due = services.needing_attention(session, user.site.code)
    if not due:
        return None
    html = render_template("rooms/_panel.html", due=due)
    return f"Rooms at {user.site.code} needing attention", Markup(html)
