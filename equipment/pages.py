"""Pages of the equipment domain (SPEC §7b): the list with the register form (admin), and
the equipment page with its status, calibration, logbook and the event form.

Views parse forms with schemas, call ``equipment.services`` and render; a refused form
re-renders with what was typed (never a password), the message at its field.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask import Response as FlaskResponse
from markupsafe import Markup
from marshmallow import ValidationError, fields, validate
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from equipment import services
from equipment.schemas import KINDS, EquipmentInSchema
from gmp_mes import paging
from gmp_mes.accounts import Principal, list_sites
from gmp_mes.errors import DomainError, NotFound
from gmp_mes.http import (
    commit_unit_of_work,
    db_session,
    form_refusal,
    roles_required,
    undo_failed_form,
)
from gmp_mes.localtime import parse_local, zone_of
from gmp_mes.schemas import StrictSchema, field_errors, form_fields
from gmp_mes.signatures import SignatureInput
from labels.http import LabelQuerySchema, label_file, label_request

bp = Blueprint("equipment", __name__, template_folder="templates")

LOGBOOK_PAGE = 50
VIEW_ROLES = ("operator", "qa", "qc", "admin")
EVENT_ROLES = ("operator", "qa", "admin")
LABEL_ROLES = ("operator", "admin")
LABEL_FORMATS = ("pdf", "png", "svg", "zpl")


class RegisterFormSchema(EquipmentInSchema):
    """The register form: the API's fields; the checkbox sends "on"."""


class EventFormSchema(StrictSchema):
    kind = fields.String(required=True, validate=validate.OneOf(
        KINDS, error="choose what was done"))
    reason = fields.String(load_default=None, validate=validate.Length(max=2000))
    valid_until = fields.String(load_default=None, validate=validate.Length(max=40))
    password = fields.String(required=True, validate=validate.Length(min=1, max=200),
                             error_messages={"required": "type your password to sign"})
    signature_reason = fields.String(load_default=None, validate=validate.Length(max=2000))


def search_target(session: Session, user: Principal, text: str) -> str | None:
    """The header search box: an equipment id opens its page (a scanned EQP label is
    resolved by identity's search through the scanned-subjects seam)."""
    equipment_id = services.normal_id(text)
    if not user.has_role(*VIEW_ROLES) or not services.EQUIPMENT_ID.fullmatch(equipment_id):
        return None
    try:
        services.get_equipment(session, equipment_id)
    except NotFound:
        return None
    return url_for("equipment.equipment_page", equipment_id=equipment_id)


@bp.route("/equipment", methods=["GET", "POST"])
@roles_required(*VIEW_ROLES)
def equipment_list() -> str | Response | tuple[str, int]:
    session = db_session()
    errors: dict[str, list[str]] = {}
    error: str | None = None
    status = 200
    if request.method == "POST":
        if not g.user.has_role("admin"):
            abort(403)
        try:
            data = RegisterFormSchema().load(form_fields(request.form))
        except ValidationError as exc:
            errors, status = field_errors(exc), 422
        else:
            try:
                equipment = services.register_equipment(
                    session, equipment_id=data["equipment_id"], type=data["type"],
                    name=data["name"], site_code=data["site"],
                    calibration_interval=data["calibration_interval"],
                    cleaning_required=data["cleaning_required"], user_id=g.user.id)
            except DomainError as exc:
                errors, error = form_refusal(exc)
                status = exc.status
            else:
                flash(f"equipment {equipment.equipment_id} registered", "ok")
                return redirect(url_for("equipment.equipment_page",
                                        equipment_id=equipment.equipment_id))
    number, size = paging.requested(request.args)
    rows, page = paging.cut(services.list_equipment(
        session, limit=size + 1, offset=(number - 1) * size), number, size)
    sites = [site.code for site in list_sites(session)] if g.user.has_role("admin") else []
    html = render_template("equipment/list.html", rows=rows, page=page, errors=errors,
                           error=error, form=request.form, sites=sites,
                           default_site=g.user.site.code)
    return (html, status) if status != 200 else html


def _page(equipment_id: str, *, errors: dict[str, list[str]] | None = None,
          error: str | None = None, form: Any = None, status: int = 200,
          label_form: Any = None, label_error: str | None = None) -> str | tuple[str, int]:
    session = db_session()
    view = services.equipment_view(session, equipment_id)
    book = services.logbook(session, view.equipment_id, events_limit=LOGBOOK_PAGE,
                            events_before=paging.cursor(request.args, "events_before"),
                            uses_limit=LOGBOOK_PAGE,
                            uses_before=paging.cursor(request.args, "uses_before"))
    html = render_template("equipment/equipment.html", view=view, book=book, kinds=KINDS,
                           errors=errors or {}, error=error, form=form or {},
                           can_record=g.user.has_role(*EVENT_ROLES),
                           can_label=g.user.has_role(*LABEL_ROLES),
                           labels=services.equipment_labels(session, view.equipment_id),
                           label_formats=LABEL_FORMATS, label_form=label_form or {},
                           label_error=label_error)
    return (html, status) if status != 200 else html


@bp.route("/equipment/<equipment_id>")
@roles_required(*VIEW_ROLES)
def equipment_page(equipment_id: str) -> str | tuple[str, int]:
    return _page(equipment_id)


@bp.route("/equipment/<equipment_id>/events", methods=["POST"])
@roles_required(*EVENT_ROLES)
def event_form(equipment_id: str) -> str | Response | tuple[str, int]:
    session = db_session()
    form = {name: request.form.get(name, "") for name in ("kind", "reason", "valid_until",
                                                          "signature_reason")}
    try:
        data = EventFormSchema().load(form_fields(request.form))
    except ValidationError as exc:
        return _page(equipment_id, errors=field_errors(exc), form=form, status=422)
    valid_until = None
    if data["valid_until"]:
        try:
            valid_until = parse_local(data["valid_until"], zone_of(g.user))
        except ValueError:
            return _page(equipment_id, form=form, status=422, errors={
                "valid_until": ["a date and time, e.g. 2027-06-30T17:00"]})
    try:
        event = services.record_event(
            session, equipment_id, kind=data["kind"], user_id=g.user.id,
            signature=SignatureInput(password=data["password"], meaning="performed",
                                     reason=data["signature_reason"]),
            reason=data["reason"], valid_until=valid_until)
    except DomainError as exc:
        errors, error = form_refusal(exc)
        return _page(equipment_id, errors=errors, error=error, form=form, status=exc.status)
    flash(f"{event.kind.replace('_', ' ')} recorded for {event.equipment_id}", "ok")
    return redirect(url_for("equipment.equipment_page", equipment_id=event.equipment_id))


def _label_query(source: Any, *, preview: bool) -> dict[str, Any]:
    fields_ = {k: v for k, v in source.items() if k != "csrf_token" and v != ""}
    fields_["reprint"] = "reprint" in source and not preview
    fields_["preview"] = preview
    loaded: dict[str, Any] = LabelQuerySchema().load(fields_)
    return loaded


@bp.route("/equipment/<equipment_id>/label/print", methods=["POST"])
@roles_required(*LABEL_ROLES)
def print_label(equipment_id: str) -> FlaskResponse | str | tuple[str, int]:
    """Print the EQP label from the page (the print is recorded; a PDF opens for the
    browser's print dialog). A refusal comes back on the page with what was chosen."""
    kept = {name: request.form.get(name, "") for name in ("format", "copies", "reason")}
    kept["reprint"] = "on" if "reprint" in request.form else ""
    try:
        label_request_, _ = label_request(_label_query(request.form, preview=False))
        printed = services.print_equipment_label(db_session(), equipment_id, label_request_,
                                                 user_id=g.user.id)
    except ValidationError as exc:
        messages = "; ".join(f"{k}: {', '.join(v)}" for k, v in field_errors(exc).items())
        return _page(equipment_id, label_form=kept, status=422,
                     label_error=f"label not printed: {messages}")
    except DomainError as exc:
        undo_failed_form(exc)
        details = "; ".join(f"{k}: {', '.join(v)}" for k, v in (exc.errors or {}).items())
        return _page(equipment_id, label_form=kept, status=exc.status,
                     label_error=f"label not printed: {details or exc.detail}")
    commit_unit_of_work()  # the print is recorded; render with no lock held
    return label_file(printed, inline=printed.media_type == "application/pdf")


@bp.route("/equipment/<equipment_id>/label/preview")
@roles_required(*LABEL_ROLES)
def preview_label(equipment_id: str) -> FlaskResponse:
    """A marked PREVIEW (records nothing, never verifies), opened in the browser."""
    try:
        label_request_, _ = label_request(_label_query(request.args, preview=True))
    except ValidationError:
        abort(422)
    return label_file(services.preview_equipment_label(db_session(), equipment_id,
                                                       label_request_), inline=True)


def dashboard_panel(session: Session, user: Principal) -> tuple[str, Markup] | None:
    """The site's equipment that cannot be used now or whose calibration runs out within
    14 days (operators, QA, admins): shown only when there is some."""
    if not user.has_role("operator", "qa", "admin"):
        return None
    due = services.needing_attention(session, user.site.code)
    if not due:
        return None
    html = render_template("equipment/_panel.html", due=due)
    return f"Equipment at {user.site.code} needing attention", Markup(html)
