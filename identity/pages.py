"""Pages of the identity domain (SPEC §7b): scan station, bedside, item, enrolment,
collection. Views stay thin: parse the form, call services, render."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import session as cookie_session
from markupsafe import Markup
from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from gmp_mes import paging, registry
from gmp_mes.alerts import countdown
from gmp_mes.errors import DomainError, ValidationFailed
from gmp_mes.http import db_session, roles_except, roles_required, undo_failed_form
from gmp_mes.models import Meaning, Site, SiteKind
from gmp_mes.schemas import field_errors, form_fields
from gmp_mes.signatures import SignatureInput
from identity import coi, services
from identity.schemas import CollectionFormSchema, PatientFormSchema

bp = Blueprint("identity", __name__, template_folder="templates")


def _site_code() -> str | None:
    return g.user.site.code if g.user.site is not None else None


def _workstation() -> str:
    return (request.form.get("workstation") or request.cookies.get("workstation")
            or f"web:{request.remote_addr or '-'}")[:100]


def _failed(exc: DomainError) -> None:
    """Roll back the failed unit of work and run its follow-up (lockout counting,
    recording a refused verdict), as the API edge does."""
    undo_failed_form(exc)


@bp.app_template_filter("id_time")
def local_time(value: datetime | None, tz: str | None = None) -> str:
    """Stored times are UTC; pages show the site's local time (SPEC §9)."""
    if value is None:
        return "—"
    zone = tz or (g.user.site.timezone if g.get("user") is not None else "UTC")
    try:
        local = value.astimezone(ZoneInfo(zone))
    except (KeyError, ValueError):
        local = value.astimezone(UTC)
    return local.strftime("%Y-%m-%d %H:%M %Z")


@bp.app_template_filter("custody_detail")
def custody_detail(value: str | None) -> str:
    """A custody event's JSON detail in words for people (issue 15: no raw JSON)."""
    import json

    if not value:
        return ""
    try:
        data = json.loads(value)
    except ValueError:
        return value
    if not isinstance(data, dict):
        return str(data)
    parts = [str(r.get("message") or r.get("code")) for r in data.get("reasons") or []
             if isinstance(r, dict)]
    if data.get("batch_number"):
        parts.append(f"checked against batch {data['batch_number']}")
    rest = {k: v for k, v in data.items() if k not in ("reasons", "batch_number")}
    parts += [f"{k.replace('_', ' ')}: {v}" for k, v in rest.items() if v not in (None, "", [])]
    return "; ".join(parts)


@bp.app_template_filter("id_countdown")
def id_countdown(value: datetime | None) -> str:
    return countdown(value)


@bp.app_template_filter("coi_label")
def coi_label(value: str | None) -> Markup:
    if not value or coi.coi_problem(value) is not None:
        return Markup.escape(value or "—")
    text, check = coi.format_for_label(value)
    return Markup('<span class="coi">{}<span class="coi-check">{}</span></span>').format(
        text, check)


# --- scan station -------------------------------------------------------------------------

@bp.route("/scan", methods=["GET", "POST"])
@roles_required()
def scan_page() -> str | Response:
    """Post/redirect/get: the scan is recorded by the POST, its verdict shown by the GET
    that follows, so Back or a reload never records the scan a second time."""
    if request.method == "POST":
        scanned = request.form.get("payload", "")
        batch_number = (request.form.get("batch_number") or "").strip() or None
        if scanned.strip():
            result = services.scan(db_session(), scanned, user=g.user, site_code=_site_code(),
                                   workstation=_workstation(), batch_number=batch_number)
            cookie_session["scan_result"] = _scan_shown(result)
        return redirect(url_for("identity.scan_page", batch_number=batch_number))
    result = cookie_session.pop("scan_result", None)
    return render_template("identity/scan.html", result=result,
                           batch_number=request.args.get("batch_number", ""),
                           workstation=_workstation())


def _scan_shown(result: services.ScanResult) -> dict[str, Any]:
    """The verdict as the page shows it, kept in the signed session cookie for the GET."""
    item = result.item
    return {
        "ok": result.ok,
        "item": None if item is None else {"item_id": item.item_id, "kind": item.kind,
                                           "batch_number": item.batch_number},
        "coi_id": result.coi_id, "status": result.status,
        "expires_at": result.expires_at.isoformat() if result.expires_at else None,
        "reasons": [{"code": r["code"], "message": r["message"][:300]}
                    for r in result.reasons[:10]],
        "subject": None if result.subject is None else {
            "kind": result.subject.kind, "id": result.subject.subject_id,
            "title": result.subject.title[:200], "url": result.subject.url},
    }


# --- bedside ------------------------------------------------------------------------------

@bp.route("/bedside", methods=["GET", "POST"])
@roles_required("clinician")
def bedside_page() -> str | Response:
    """Post/redirect/get, like the scan station: the POST records the verdict, the GET
    that follows shows it (from the recorded verification named in the signed session
    cookie), so Back or a reload never posts the check again."""
    form = request.form
    if request.method == "POST":
        if form.get("patient_payload") and form.get("product_payload"):
            verdict = services.verify_bedside(db_session(), form["patient_payload"],
                                             form["product_payload"], user=g.user,
                                             site_code=_site_code())
            if verdict.verification is not None:
                cookie_session["bedside_verification"] = verdict.verification.id
        return redirect(url_for("identity.bedside_page"))
    done = (request.args.get("administered") or "").strip().upper()
    if done:
        administration = services.administration_of(db_session(), done)
        if administration is not None:
            return render_template("identity/bedside.html", result=None, form={},
                                   meanings=[Meaning.ADMINISTERED.value], errors={},
                                   administered=administration)
    result: services.BedsideResult | None = None
    shown = cookie_session.pop("bedside_verification", None)
    if isinstance(shown, int):
        result = services.recorded_bedside(db_session(), shown, user=g.user,
                                           site_code=_site_code())
    kept = ({"patient_payload": result.verification.patient_payload,
             "product_payload": result.verification.product_payload}
            if result is not None and result.verification is not None else {})
    visible = bool(result and result.patient
                   and services.may_see_identity(db_session(), result.patient, g.user))
    return render_template("identity/bedside.html", result=result, form=kept,
                           meanings=[Meaning.ADMINISTERED.value], errors={}, administered=None,
                           identity_visible=visible)


@bp.route("/bedside/administer", methods=["POST"])
@roles_required("clinician")
def bedside_administer() -> Response | tuple[str, int]:
    form = request.form
    session = db_session()
    try:
        administration = services.administer(
            session, form.get("patient_payload", ""), form.get("product_payload", ""),
            user=g.user, site_code=_site_code(),
            signature=SignatureInput(password=form.get("password", ""),
                                     meaning=form.get("meaning", ""),
                                     reason=form.get("reason") or None),
        )
    except DomainError as exc:
        _failed(exc)
        errors = exc.errors or {}
        if any(key.startswith("signature") for key in errors):
            # The check matched; only the signature failed: ask for it again.
            return render_template("identity/bedside.html", result=None, form=form,
                                   meanings=[Meaning.ADMINISTERED.value], errors=errors,
                                   administered=None, sign_again=exc.detail), exc.status
        reasons = exc.extra.get("reasons") or [{"code": exc.code, "message": exc.detail}]
        result = services.BedsideResult(match=False, reasons=reasons, item=None, patient=None)
        return render_template("identity/bedside.html", result=result, form=form,
                               meanings=[Meaning.ADMINISTERED.value], errors=errors,
                               administered=None), exc.status
    # Post/redirect/get: a reload or Back never asks to send the administration again.
    return redirect(url_for("identity.bedside_page", administered=administration.item_id))


# --- items and patients -------------------------------------------------------------------

CUSTODY_PAGE = 100


def _custody_before() -> int | None:
    return paging.cursor(request.args, "custody_before")


@bp.route("/items/<item_id>")
@roles_required()
def item_page(item_id: str) -> str:
    session = db_session()
    view = services.item_view(session, item_id, custody_limit=CUSTODY_PAGE,
                              custody_before=_custody_before())
    return render_template("identity/item.html", view=view, item=view.item,
                           sites=_sites(session), custody_form={}, custody_errors={},
                           custody_error=None,
                           custody_actions=services.custody_actions_for(view.item, g.user))


@bp.route("/items/<item_id>/custody", methods=["POST"])
@roles_except("admin")
def item_custody(item_id: str) -> Response | tuple[str, int]:
    """The item page's custody form (ship, receive, thaw, handover, move)."""
    form = request.form
    session = db_session()
    try:
        services.record_custody(
            session, item_id, action=form.get("action", ""), site=form.get("site", ""),
            user=g.user, location=form.get("location") or None, workstation=_workstation(),
            to_user=form.get("to_user") or None, position=form.get("position") or None,
        )
    except DomainError as exc:
        _failed(exc)
        view = services.item_view(db_session(), item_id, custody_limit=CUSTODY_PAGE)
        page = render_template("identity/item.html", view=view, item=view.item,
                               sites=_sites(db_session()), custody_form=form,
                               custody_errors=exc.errors or {}, custody_error=exc.detail,
                               custody_actions=services.custody_actions_for(view.item,
                                                                            g.user))
        return page, exc.status
    flash(f"{form.get('action')} recorded", "ok")
    return redirect(url_for("identity.item_page", item_id=item_id.strip().upper()))


@bp.route("/patients")
@roles_required()
def patient_list() -> str:
    """Patients, newest first, with search by name, MRN or COI (SPEC §7b): names and MRNs
    only of the patients the user may see (the others: COI and initials)."""
    text = (request.args.get("q") or "").strip()[:100]
    number, size = paging.requested(request.args)
    rows = services.search_patients(db_session(), text, g.user, limit=size + 1,
                                    offset=(number - 1) * size)
    rows, page = paging.cut(rows, number, size)
    return render_template("identity/patients.html", rows=rows, page=page, q=text)


def search_target(session: Session, user: Any, text: str) -> str | None:
    """The header search box (gmp_mes.pages.add_search): item, label (a lot's or
    equipment's too) or COI."""
    found = services.find_target(session, text)
    if found is None:
        return None
    kind, key = found
    if kind == "item":
        return url_for("identity.item_page", item_id=key)
    if kind == "url":  # a lot's or equipment's page, as its domain gave it
        return key
    return url_for("identity.patient_page", coi_id=key)


@bp.route("/patients/<coi_id>")
@roles_required()
def patient_page(coi_id: str) -> str:
    session = db_session()
    view = services.patient_view(session, coi_id, g.user)
    # Sections the domains above add (outcomes: the follow-up visits, SPEC §16).
    sections = [section for provide in registry.patient_sections.providers()
                if (section := provide(session, g.user, view.coi_id)) is not None]
    return render_template("identity/patient.html", view=view, sections=sections)


def _sites(session: Session, *kinds: str) -> list[Site]:
    statement = select(Site).order_by(Site.code)
    if kinds:
        statement = statement.where(Site.kind.in_(kinds))
    return list(session.scalars(statement))


@bp.route("/patients/new", methods=["GET", "POST"])
@roles_required("clinician", "admin")
def enrol_page() -> str | Response | tuple[str, int]:
    session = db_session()
    errors: dict[str, list[str]] = {}
    error = None
    if request.method == "POST":
        try:
            data = PatientFormSchema().load(form_fields(request.form))
        except ValidationError as exc:
            errors = field_errors(exc)
        else:
            try:
                patient = services.enrol_patient(session, **data)
            except ValidationFailed as exc:
                _failed(exc)
                errors = exc.errors or {}
            except DomainError as exc:
                _failed(exc)
                error = exc.detail
            else:
                # The request boundary (GmpFlask.dispatch_request) commits.
                return redirect(url_for("identity.patient_page", coi_id=patient.coi_id))
    status = 422 if errors else (409 if error else 200)
    page = render_template("identity/enrol.html", errors=errors, error=error, form=request.form,
                           sites=_sites(session, SiteKind.TREATMENT.value),
                           default_site=_site_code())
    return (page, status) if status != 200 else page


@bp.route("/collections/new", methods=["GET", "POST"])
@roles_required("clinician", "operator")
def collection_page() -> str | Response | tuple[str, int]:
    session = db_session()
    errors: dict[str, list[str]] = {}
    error = None
    form = request.form
    if request.method == "POST":
        try:
            data = CollectionFormSchema(
                decimal_separator=g.user.site.decimal_separator).load(form_fields(form))
        except ValidationError as exc:
            errors = field_errors(exc)
        else:
            data["collected_at"] = _site_local(data["collected_at"])
            try:
                collection = services.record_collection(session, **data)
            except ValidationFailed as exc:
                _failed(exc)
                errors = exc.errors or {}
            except DomainError as exc:
                _failed(exc)
                error = exc.detail
            else:
                return redirect(url_for("identity.item_page", item_id=collection.item_id))
    status = 422 if errors else (409 if error else 200)
    page = render_template("identity/collection.html", errors=errors, error=error, form=form,
                           sites=_sites(session), default_site=_site_code(),
                           coi_id=request.args.get("coi_id", ""))
    return (page, status) if status != 200 else page


def _site_local(naive: datetime) -> datetime:
    """A time typed in a datetime-local field is the user's site local time."""
    return naive.replace(tzinfo=ZoneInfo(g.user.site.timezone))



# --- dashboard ----------------------------------------------------------------------------

def dashboard_panel(session: Session, user: Any) -> tuple[str, Markup] | None:
    """Items at the user's site that still need handling (clinicians and operators)."""
    if user is None or not user.has_role("clinician", "operator"):
        return None
    items = services.items_to_handle(session, user.site.code)
    html = render_template("identity/_panel.html", items=items)
    return f"Items at {user.site.code}", Markup(html)


@bp.route("/items")
@roles_required()
def item_lookup() -> Response:
    """Jump to an item by id (the item form of the dashboard)."""
    item_id = (request.args.get("item_id") or "").strip().upper()
    if not item_id:
        abort(404)
    return redirect(url_for("identity.item_page", item_id=item_id))
