"""Pages of the materials domain (SPEC §7b ``/materials``, ``/lots/<lot_id>``): the
material master with its create form (qa, admin), the lots with their receive form
(operator, qc, qa), the lot page with QA's signed release and rejection, every use and
the recall (where used).

Views parse forms with the API's schemas, call ``materials.services`` and render; a
refused form comes back on its page with what was typed (never a password) and the
messages at their fields; every successful POST redirects.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from markupsafe import Markup
from marshmallow import ValidationError
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

import labels.http
from gmp_mes import paging
from gmp_mes.accounts import Principal
from gmp_mes.errors import DomainError
from gmp_mes.http import (
    commit_unit_of_work,
    db_session,
    form_signature,
    roles_required,
    undo_failed_form,
)
from gmp_mes.schemas import field_errors, form_fields, number_example
from materials import services
from materials.schemas import LotFormSchema, MaterialInSchema

bp = Blueprint("materials", __name__, template_folder="templates")

RECEIVERS = ("operator", "qc", "qa")
MASTER = ("qa", "admin")


def _materials_page(*, errors: dict[str, list[str]] | None = None, error: str | None = None,
                    form: Any = None, which: str | None = None,
                    status: int = 200) -> tuple[str, int]:
    session = db_session()
    number, size = paging.requested(request.args)
    lots, page = paging.cut(services.recent_lots(session, limit=size + 1,
                                                 offset=(number - 1) * size), number, size)
    return render_template(
        "materials/materials.html", materials=services.list_materials(session),
        lots=lots, page=page, kinds=services.KINDS, errors=errors or {},
        error=error, form=form or {}, which=which,
        can_create=g.user.has_role(*MASTER), can_receive=g.user.has_role(*RECEIVERS),
        quantity_example=number_example(g.user.site.decimal_separator, "10"),
        show=services.show,
    ), status


def _refused(exc: DomainError) -> tuple[dict[str, list[str]], str | None]:
    undo_failed_form(exc)
    return dict(exc.errors or {}), (None if exc.errors else exc.detail)


@bp.route("/materials")
@roles_required("operator", "qc", "qa", "admin")
def materials_page() -> tuple[str, int]:
    return _materials_page()


@bp.route("/materials", methods=["POST"])
@roles_required(*MASTER)
def create_material() -> Response | tuple[str, int]:
    try:
        data = MaterialInSchema().load(form_fields(request.form))
    except ValidationError as exc:
        return _materials_page(errors=field_errors(exc), form=request.form, which="create",
                               status=422)
    try:
        material = services.create_material(db_session(), user_id=g.user.id, **data)
    except DomainError as exc:
        errors, error = _refused(exc)
        return _materials_page(errors=errors, error=error, form=request.form, which="create",
                               status=exc.status)
    flash(f"material {material.code} created", "ok")
    return redirect(url_for("materials.materials_page"))


@bp.route("/materials/lots", methods=["POST"])
@roles_required(*RECEIVERS)
def receive_lot() -> Response | tuple[str, int]:
    fields = form_fields(request.form)
    code = fields.pop("material", "")
    errors: dict[str, list[str]] = {}
    data: dict[str, Any] = {}
    try:
        data = LotFormSchema(decimal_separator=g.user.site.decimal_separator).load(fields)
    except ValidationError as exc:
        errors = field_errors(exc)
    if not code:
        errors["material"] = ["choose the material received"]
    if errors:
        return _materials_page(errors=errors, form=request.form, which="receive", status=422)
    # A lot expires at the end of the day printed on it (UTC, as the label prints it).
    expires_at = datetime.combine(data.pop("expires_at"), time(23, 59), tzinfo=UTC)
    try:
        lot = services.receive_lot(db_session(), code, expires_at=expires_at,
                                   user_id=g.user.id, **data)
    except DomainError as exc:
        errors, error = _refused(exc)
        return _materials_page(errors=errors, error=error, form=request.form, which="receive",
                               status=exc.status)
    flash(f"lot {lot.lot_id} received into quarantine", "ok")
    return redirect(url_for("materials.lot_page", lot_id=lot.lot_id))


def _lot_page(lot_id: str, *, errors: dict[str, list[str]] | None = None,
              error: str | None = None, form: Any = None, which: str | None = None,
              status: int = 200) -> tuple[str, int]:
    session = db_session()
    view = services.lot_view(session, lot_id)
    return render_template(
        "materials/lot.html", view=view, lot=view.lot,
        recall=services.where_used(session, view.lot.lot_id), errors=errors or {},
        error=error, form=form or {}, which=which, show=services.show,
        can_decide=services.decidable(view.lot) and g.user.has_role("qa"),
        can_label=g.user.has_role(*RECEIVERS),
        printed=view.labels,
    ), status


@bp.route("/lots/<lot_id>")
@roles_required()
def lot_page(lot_id: str) -> tuple[str, int]:
    return _lot_page(lot_id)


@bp.route("/lots/<lot_id>/label/preview")
@roles_required(*RECEIVERS)
def preview_lot_label(lot_id: str) -> Response:
    """A marked PREVIEW (PDF or PNG): records no print, its code never verifies."""
    fmt = request.args.get("format", "pdf")
    request_ = labels.http.label_request({"format": fmt if fmt in ("pdf", "png") else "pdf"})[0]
    session = db_session()
    try:
        printed = services.preview_lot_label(
            session, services.lot_label_subject(session, lot_id), request_)
    except DomainError as exc:
        undo_failed_form(exc)
        flash(f"no preview: {exc.detail}", "error")
        return redirect(url_for("materials.lot_page", lot_id=lot_id))
    return labels.http.label_file(printed, inline=True)


@bp.route("/lots/<lot_id>/label", methods=["POST"])
@roles_required(*RECEIVERS)
def print_lot_label(lot_id: str) -> Response:
    """Print the lot's label (the original, or a reprint with a reason): the file opens
    (PDF) or downloads (PNG, ZPL); a refusal comes back on the lot page."""
    form: dict[str, object] = {k: v for k, v in request.form.items()
                               if k in ("format", "reason", "copies") and v.strip()}
    form["reprint"] = "reprint" in request.form
    session = db_session()
    try:
        query = labels.http.LabelQuerySchema().load(form)
        print_request, _ = labels.http.label_request(query)
        subject = services.lot_label_subject(session, lot_id, for_update=True)
        printed = services.print_lot_label(session, subject, print_request,
                                           user_id=g.user.id)
    except ValidationError as exc:
        flash("label not printed: " + "; ".join(
            f"{k}: {', '.join(v)}" for k, v in field_errors(exc).items()), "error")
        return redirect(url_for("materials.lot_page", lot_id=lot_id))
    except DomainError as exc:
        undo_failed_form(exc)
        flash(f"label not printed: {exc.detail}", "error")
        return redirect(url_for("materials.lot_page", lot_id=lot_id))
    commit_unit_of_work()  # the print is recorded; render with no lock held
    return labels.http.label_file(printed)


@bp.route("/lots/<lot_id>/<action>", methods=["POST"])
@roles_required("qa")
def decide_lot(lot_id: str, action: str) -> Response | tuple[str, int]:
    session = db_session()
    if action not in ("release", "reject"):
        flash(f"unknown action {action}", "error")
        return redirect(url_for("materials.lot_page", lot_id=lot_id))
    signature = form_signature("released" if action == "release" else "rejected")
    try:
        if action == "release":
            services.release_lot(session, lot_id, user_id=g.user.id, signature=signature)
        else:
            services.reject_lot(session, lot_id, user_id=g.user.id, signature=signature,
                                reason=request.form.get("reason", ""))
    except DomainError as exc:
        errors, error = _refused(exc)
        errors.pop("signature.password", None)
        if exc.code == "signature_rejected":
            errors["password"] = ["wrong password: nothing was signed"]
        return _lot_page(lot_id, errors=errors, error=error or exc.detail,
                         form={k: v for k, v in request.form.items() if "password" not in k},
                         which=action, status=exc.status)
    flash(f"lot {lot_id} {'released' if action == 'release' else 'rejected'}", "ok")
    return redirect(url_for("materials.lot_page", lot_id=lot_id))


def dashboard_panel(session: Session, user: Principal) -> tuple[str, Markup] | None:
    """Lots of the user's site waiting for QA's decision, and released lots with stock
    left that expire within 30 days (QA, QC, operators)."""
    if not user.has_role(*RECEIVERS):
        return None
    lots = services.lots_to_handle(session, user.site.code)
    html = render_template("materials/_panel.html", lots=lots, show=services.show,
                           decides=user.has_role("qa"))
    return f"Material lots at {user.site.code}", Markup(html)
