"""Pages of the logistics domain (SPEC §7b ``/shipments/<id>``): the shipments with the
ship form (operators, clinicians), the shipment page with its items, condition,
temperature chart (excursions and gaps shaded), the log upload, the receipt by scanning
every bag (a keyboard-wedge scanner ends each scan with Enter: one scan a line) with its
reconciliation, and QA's signed disposition of a held shipment.

Views parse forms, call ``logistics.services`` and render; a refused form comes back on
its page with what was typed (never a password) and the messages at their fields; every
successful POST redirects.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from markupsafe import Markup
from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from gmp_mes import paging
from gmp_mes.accounts import Principal
from gmp_mes.errors import DomainError
from gmp_mes.http import db_session, form_signature, roles_except, roles_required, undo_failed_form
from gmp_mes.localtime import zone
from gmp_mes.models import Site
from gmp_mes.schemas import (
    DecimalSeparatorRefused,
    field_errors,
    form_fields,
    form_number,
    number_example,
)
from logistics import api, services
from logistics.chart import chart_img
from logistics.schemas import ShipmentInSchema, StorageInSchema

bp = Blueprint("logistics", __name__, template_folder="templates")
bp.url_value_preprocessor(api.allow_large_log)  # the upload form takes a 30-day log

VIEWERS = ("operator", "clinician", "qa", "qc")


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def _sites() -> list[str]:
    return list(db_session().scalars(select(Site.code).order_by(Site.code)))


def _list_page(*, errors: dict[str, list[str]] | None = None, error: str | None = None,
               form: Any = None, status: int = 200) -> tuple[str, int]:
    session = db_session()
    number, size = paging.requested(request.args)
    rows, page = paging.cut(services.list_shipments(session, limit=size + 1,
                                                    offset=(number - 1) * size),
                            number, size)
    return render_template("logistics/shipments.html", shipments=rows, page=page,
                           errors=errors or {}, error=error, form=form or {},
                           sites=_sites(), can_ship=g.user.has_role(*services.SHIPPERS),
                           number_hint=number_example(g.user.site.decimal_separator, "-150")
                           ), status


@bp.route("/shipments")
@roles_required(*VIEWERS)
def shipments_page() -> tuple[str, int]:
    return _list_page()


def _number(raw: str, name: str, errors: dict[str, list[str]]) -> object:
    try:
        return form_number(raw, g.user.site.decimal_separator)
    except DecimalSeparatorRefused as exc:
        errors[name] = [str(exc)]
        return None


@bp.route("/shipments", methods=["POST"])
@roles_required(*services.SHIPPERS)
def create_shipment() -> Response | tuple[str, int]:
    fields = form_fields(request.form)
    errors: dict[str, list[str]] = {}
    condition = {"min_c": _number(fields.pop("min_c", ""), "condition.min_c", errors),
                 "max_c": _number(fields.pop("max_c", ""), "condition.max_c", errors)}
    body = {**fields, "items": _lines(request.form.get("items", "")), "condition": condition}
    data: dict[str, Any] = {}
    try:
        data = ShipmentInSchema().load(body)
    except ValidationError as exc:
        errors.update(field_errors(exc))
    if errors:
        return _list_page(errors=errors, form=request.form, status=422)
    try:
        shipment = services.create_shipment(
            db_session(), items=data["items"], from_site=data["from_site"],
            to_site=data["to_site"], min_c=data["condition"]["min_c"],
            max_c=data["condition"]["max_c"], shipper_id=data["shipper_id"],
            logger_id=data["logger_id"], courier=data["courier"], user=g.user)
    except DomainError as exc:
        undo_failed_form(exc)
        return _list_page(errors=dict(exc.errors or {}), error=exc.detail, form=request.form,
                          status=exc.status)
    flash(f"shipment {shipment.shipment_id} shipped to {shipment.to_site}", "ok")
    return redirect(url_for("logistics.shipment_page", shipment_id=shipment.shipment_id))


def _shipment_page(shipment_id: str, *, errors: dict[str, list[str]] | None = None,
                   error: str | None = None, form: Any = None, which: str | None = None,
                   status: int = 200) -> tuple[str, int]:
    session = db_session()
    shipment = services.get_shipment(session, shipment_id)
    log = services.log_summary(services.temperature_log(session, shipment.shipment_id))
    chart = None
    if log is not None:
        readings = services.readings_of(session, shipment.shipment_id)
        summary = services.summarise(readings, shipment.min_c, shipment.max_c)
        tz = zone(session.scalar(select(Site.timezone).where(Site.code == shipment.to_site)))
        chart = chart_img(shipment, readings, summary, tz)
    receipts = [(r, json.loads(r.received), json.loads(r.missing), json.loads(r.unexpected))
                for r in services.receipts_of(session, shipment.shipment_id)]
    return render_template(
        "logistics/shipment.html", shipment=shipment, log=log, chart=chart,
        items=services.shipment_items(session, shipment.shipment_id), receipts=receipts,
        errors=errors or {}, error=error, form=form or {}, which=which,
        can_upload=log is None and g.user.has_role(*services.UPLOADERS),
        can_receive=(shipment.status != "received" and g.user.has_role(*services.SHIPPERS)
                     and g.user.site.code == shipment.to_site),
        can_decide=shipment.holding and g.user.has_role("qa"),
        gap_factor=services.GAP_FACTOR,
    ), status


@bp.route("/shipments/<shipment_id>")
@roles_required(*VIEWERS)
def shipment_page(shipment_id: str) -> tuple[str, int]:
    return _shipment_page(shipment_id)


def _refused(shipment_id: str, exc: DomainError, which: str,
             form: dict[str, str]) -> tuple[str, int]:
    undo_failed_form(exc)
    errors = dict(exc.errors or {})
    errors.pop("signature.password", None)
    if exc.code == "signature_rejected":
        errors["password"] = ["wrong password: nothing was signed"]
    return _shipment_page(shipment_id, errors=errors, error=exc.detail, which=which,
                          form={k: v for k, v in form.items() if "password" not in k},
                          status=exc.status)


@bp.route("/shipments/<shipment_id>/temperature-log", methods=["POST"])
@roles_except("admin")
def upload_log(shipment_id: str) -> Response | tuple[str, int]:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _shipment_page(shipment_id, errors={"file": ["choose the logger's CSV file"]},
                              which="upload", status=422)
    try:
        services.upload_log(db_session(), shipment_id, data=upload.read(), user=g.user)
    except DomainError as exc:
        undo_failed_form(exc)
        return _shipment_page(shipment_id, errors={"file": [exc.detail]}, error=exc.detail,
                              which="upload", status=exc.status)
    flash("temperature log stored", "ok")
    return redirect(url_for("logistics.shipment_page", shipment_id=shipment_id) + "#log")


@bp.route("/shipments/<shipment_id>/receive", methods=["POST"])
@roles_required(*services.SHIPPERS)
def receive(shipment_id: str) -> Response | tuple[str, int]:
    form = dict(request.form)
    payloads = _lines(request.form.get("payloads", ""))
    if not payloads:
        return _shipment_page(shipment_id, errors={"payloads": ["scan every bag's label"]},
                              form=form, which="receive", status=422)
    try:
        outcome = services.receive_shipment(
            db_session(), shipment_id, site=g.user.site.code, payloads=payloads,
            location=request.form.get("location") or None, user=g.user)
    except DomainError as exc:
        return _refused(shipment_id, exc, "receive", form)
    flash(f"{len(outcome.received)} item(s) received; {len(outcome.missing)} missing, "
          f"{len(outcome.unexpected)} unexpected"
          + (f"; ON HOLD: {outcome.hold}" if outcome.hold else ""),
          "error" if outcome.hold or outcome.missing or outcome.unexpected else "ok")
    return redirect(url_for("logistics.shipment_page", shipment_id=shipment_id) + "#receipts")


@bp.route("/shipments/<shipment_id>/disposition", methods=["POST"])
@roles_required("qa")
def decide(shipment_id: str) -> Response | tuple[str, int]:
    form = dict(request.form)
    decision = request.form.get("decision", "")
    meaning = "approved" if decision == "accept" else "rejected"
    try:
        services.decide_shipment(db_session(), shipment_id, decision=decision,
                                 justification=request.form.get("justification"),
                                 user=g.user, signature=form_signature(meaning))
    except DomainError as exc:
        return _refused(shipment_id, exc, "decide", form)
    flash(f"shipment {shipment_id}: QA {'accepted' if decision == 'accept' else 'rejected'}",
          "ok")
    return redirect(url_for("logistics.shipment_page", shipment_id=shipment_id))


def _storage_page(*, errors: dict[str, list[str]] | None = None, error: str | None = None,
                  form: Any = None, status: int = 200) -> tuple[str, int]:
    session = db_session()
    units = [services.occupancy(session, unit.code) for unit in services.list_units(session)]
    return render_template("logistics/storage.html", units=units, errors=errors or {},
                           error=error, form=form or {},
                           can_create=g.user.has_role("admin")), status


@bp.route("/storage")
@roles_required()
def storage_page() -> tuple[str, int]:
    return _storage_page()


@bp.route("/storage", methods=["POST"])
@roles_required("admin")
def create_storage() -> Response | tuple[str, int]:
    errors: dict[str, list[str]] = {}
    fields = form_fields(request.form)
    body = {"code": fields.get("code", ""), "positions": fields.get("positions", ""),
            "condition": {"min_c": _number(fields.get("min_c", ""), "condition.min_c", errors),
                          "max_c": _number(fields.get("max_c", ""), "condition.max_c", errors)}}
    data: dict[str, Any] = {}
    try:
        data = StorageInSchema().load(body)
    except ValidationError as exc:
        errors.update(field_errors(exc))
    if errors:
        return _storage_page(errors=errors, form=request.form, status=422)
    try:
        unit = services.create_unit(db_session(), code=data["code"],
                                    positions=data["positions"],
                                    min_c=data["condition"]["min_c"],
                                    max_c=data["condition"]["max_c"], user=g.user)
    except DomainError as exc:
        undo_failed_form(exc)
        return _storage_page(errors=dict(exc.errors or {}), error=exc.detail,
                             form=request.form, status=exc.status)
    flash(f"storage unit {unit.code} created", "ok")
    return redirect(url_for("logistics.storage_page") + f"#{unit.code}")


def dashboard_panel(session: Session, user: Principal) -> tuple[str, Markup] | None:
    """Shipments someone must act on (SPEC §14): held ones waiting for QA's disposition
    (QA: every site's; others: those reaching their site) and those in transit to the
    user's site (operators, clinicians, QA)."""
    if not user.has_role("qa", *services.SHIPPERS):
        return None
    held, incoming = services.shipments_to_handle(session, user.site.code,
                                                  qa=user.has_role("qa"))
    if not held and not incoming:
        return None
    html = render_template("logistics/_panel.html", held=held, incoming=incoming,
                           decides=user.has_role("qa"))
    return "Shipments", Markup(html)
