"""Pages of the batches domain: batch list, executed batch record, deviations.

Views only parse forms, call services and render; every rule lives in
``batches.services``. A refused action (wrong password, out-of-order step,
bad value) comes back as a message on the same page, never as a 500.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from markupsafe import Markup, escape
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from batches import export, record, services
from batches.models import ACTIVE_BATCH_STATUSES, BatchStatus
from gmp_mes import paging
from gmp_mes.accounts import Person
from gmp_mes.errors import DomainError, ValidationFailed
from gmp_mes.http import db_session, form_signature, roles_required, undo_failed_form
from gmp_mes.models import Meaning
from gmp_mes.registry import LotGiven, StepResources
from gmp_mes.schemas import DecimalSeparatorRefused, form_number
from processes.definitions import ParamType

bp = Blueprint("batches", __name__, template_folder="templates")
RECORD_ROLES = ("operator", "qc", "qa", "admin")


def _refused(error: DomainError) -> None:
    """Undo the failed unit of work, keep what must be kept (lockout count), say why."""
    undo_failed_form(error)
    _say_refused(error)


def _say_refused(error: DomainError) -> None:
    fields = "; ".join(f"{k}: {', '.join(v)}" for k, v in (error.errors or {}).items())
    flash(f"{error.detail}{' (' + fields + ')' if fields else ''}", "error")


def _verifier() -> services.VerifierInput | None:
    username = request.form.get("verifier_username", "").strip()
    if not username:
        return None
    return services.VerifierInput(username=username,
                                  password=request.form.get("verifier_password", ""))


def _form_values(batch_number: str, step_code: str) -> dict[str, Any]:
    """Form text to JSON-like values by parameter type; the service checks them."""
    batch = services.get_batch(db_session(), batch_number)
    step = services.definition_of_batch(batch).step(step_code)
    values: dict[str, Any] = {}
    refused: dict[str, list[str]] = {}
    if step is None:
        return values
    for param in step.parameters:
        raw = request.form.get(f"v_{param.code}", "").strip()
        if raw == "":
            continue
        if param.type == ParamType.BOOLEAN:
            values[param.code] = {"yes": True, "no": False}.get(raw, raw)
        elif param.numeric:
            try:
                number = form_number(raw, g.user.site.decimal_separator)
            except DecimalSeparatorRefused as exc:
                refused[f"values.{param.code}"] = [str(exc)]
                continue
            integral = isinstance(number, float) and number.is_integer()
            values[param.code] = (int(number) if param.type == ParamType.INTEGER
                                  and isinstance(number, float) and integral else number)
        else:
            values[param.code] = raw
    if step.creates:
        raw_bags = request.form.get("bags", "").strip()
        if raw_bags:
            values["bags"] = int(raw_bags) if raw_bags.isdigit() else raw_bags
    if refused:
        # Before the service: "1,234" at a point site is never guessed (issue 15).
        raise ValidationFailed("a number is not written as this site writes numbers",
                               errors=refused)
    return values


def _form_resources(batch_number: str, step_code: str) -> StepResources:
    """The lots (with the quantity where the step leaves it to the operator) and the
    equipment scanned or typed into a step form's fields (``lot_<i>``, ``qty_<i>``,
    ``eqp_<i>``, one per need the step declares) and the room (``room``); the service
    checks them."""
    batch = services.get_batch(db_session(), batch_number)
    step = services.definition_of_batch(batch).step(step_code)
    if step is None:
        return StepResources()
    lots: list[LotGiven] = []
    refused: dict[str, list[str]] = {}
    for i, need in enumerate(step.needs.materials):
        lot = request.form.get(f"lot_{i}", "").strip()
        raw = request.form.get(f"qty_{i}", "").strip()
        quantity = None
        if raw:
            try:
                number = form_number(raw, g.user.site.decimal_separator)
            except DecimalSeparatorRefused as exc:
                refused[f"qty_{i}"] = [str(exc)]
                continue
            if not isinstance(number, float):
                refused[f"qty_{i}"] = [f"{raw!r} is not a number"]
                continue
            quantity = number
        if lot:
            lots.append(LotGiven(lot, quantity if quantity is not None else need.quantity))
    if refused:
        raise ValidationFailed("a quantity is not a number as this site writes numbers",
                               errors=refused)
    equipment = tuple(
        given for i in range(len(step.needs.equipment))
        if (given := request.form.get(f"eqp_{i}", "").strip())
    )
    # SPEC §12: the room of a step that declares a room grade (the rooms domain checks it).
    room = request.form.get("room", "").strip() or None
    return StepResources(materials=tuple(lots), equipment=equipment, room=room)


def _scanned_lines(name: str) -> list[str] | None:
    """A multi-scan field: a keyboard-wedge scanner ends each label with Enter, so the
    field holds one label per line (blank lines left out); None when it is not sent."""
    if name not in request.form:
        return None
    return [line.strip() for line in request.form[name].splitlines() if line.strip()]


@bp.route("/batches")
@roles_required(*RECORD_ROLES)
def batch_list() -> str:
    status = request.args.get("status") or None
    session = db_session()
    number, size = paging.requested(request.args)
    batches, page = paging.cut(services.list_batches(
        session, statuses=(status,) if status else (), limit=size + 1,
        offset=(number - 1) * size), number, size)
    return render_template("batches/list.html", batches=batches, status=status, page=page,
                           statuses=[s.value for s in BatchStatus])


def search_target(session: Session, user: Person, text: str) -> str | None:
    """The header search box (gmp_mes.pages.add_search): a batch number."""
    if not user.has_role(*RECORD_ROLES):
        return None
    found = services.find_batch_number(session, text)
    return url_for("batches.batch_page", batch_number=found) if found else None


@bp.route("/batches", methods=["POST"])
@roles_required("operator")
def start_batch() -> Response:
    session = db_session()
    try:
        batch = services.start_batch(
            session, item_id=request.form.get("item_id", "").strip(),
            process_code=request.form.get("process_code") or None, user_id=g.user.id,
        )
    except DomainError as error:
        _refused(error)
        return redirect(url_for("batches.batch_list"))
    flash(f"batch {batch.batch_number} started", "ok")
    return redirect(url_for("batches.batch_page", batch_number=batch.batch_number))


@bp.route("/batches/<batch_number>")
@roles_required(*RECORD_ROLES)
def batch_page(batch_number: str) -> str:
    return _render_batch(batch_number)


# Step records on one batch page (the newest; older ones on the next pages, issue 15).
STEPS_PAGE = 50


def _render_batch(batch_number: str, kept: dict[str, Any] | None = None) -> str:
    session = db_session()
    data = record.executed_record(session, batch_number, steps_limit=STEPS_PAGE,
                                  steps_before=paging.cursor(request.args, "steps_before"))
    return render_template(
        "batches/batch.html", b=data,
        curve=export.curve_html(data["expansion_curve"],
                                export.expansion_overlay(session, batch_number)),
        show=export.show_value, dt=_local_time(g.user.site.timezone), kept=kept,
        steps_page=STEPS_PAGE, actions=services.allowed_actions(data["status"]),
        deviation_action=services.deviation_action,
    )


# Fields whose text a refused form never sends back (21 CFR 11.300: passwords are
# typed anew, never echoed into a page); a scan is scanned again (the scanner types
# into the empty field, a kept payload would be appended to).
SECRET_FIELDS = frozenset({"password", "verifier_password", "csrf_token", "scan"})


def _field_of(key: str) -> str:
    """The form field a service error names: values.x -> v_x, signature.* -> password."""
    if key.startswith("values."):
        name = key.split(".", 1)[1]
        return "bags" if name == "bags" else f"v_{name}"
    if key.startswith("signature"):
        return "password"
    if key.startswith("verifier"):
        return "verifier_password"
    if key in ("assessment", "closure"):
        return "text"  # the deviation forms' one text area
    return key


def _kept_form(form_key: str, error: DomainError, what: str = "The step") -> dict[str, Any]:
    """What a refused form (step, correction, deviation) shows again: every value typed
    (never a password), the message at the field that caused it, and a summary that says
    whose signature failed. ``form_key`` names the one form of the page it belongs to."""
    errors: dict[str, list[str]] = {}
    for key, messages in (error.errors or {}).items():
        errors.setdefault(_field_of(key), []).extend(messages)
    summary = []
    if "password" in errors:
        errors["password"] = ["your password (the performer's) was wrong: nothing was signed"]
    if "verifier_password" in errors:
        errors["verifier_password"] = [
            "the verifier's user name or password was not accepted: nothing was signed"]
    for name, messages in errors.items():
        summary.append((name, "; ".join(messages)))
    if not summary:
        summary.append(("", error.detail))
    elif error.code not in ("validation_error", "signature_rejected"):
        summary.insert(0, ("", error.detail))
    values = {k: v for k, v in request.form.items() if k not in SECRET_FIELDS}
    return {"step": form_key, "values": values, "errors": errors, "summary": summary,
            "title": _refusal_title(error, errors, what)}


def _refusal_title(error: DomainError, errors: dict[str, list[str]],
                   what: str = "The step") -> str:
    if "verifier_password" in errors and "password" not in errors:
        return "The verifier's signature failed: nothing was recorded."
    if "password" in errors:
        return "Your signature (performer) failed: nothing was recorded."
    return f"{what} was not recorded."


def _refused_form(batch_number: str, form_key: str, error: DomainError,
                  what: str) -> tuple[str, int]:
    """A refused form re-renders at once (no redirect), with what was typed."""
    undo_failed_form(error)
    return _render_batch(batch_number, _kept_form(form_key, error, what)), error.status


def _local_time(zone: str) -> Any:
    """SPEC §9: stored times are UTC, pages show the site's local time (zone named)."""
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")

    def show(text: str | None) -> str:
        if not text:
            return ""
        moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(tz)
        return moment.strftime("%Y-%m-%d %H:%M:%S %Z")

    return show


@bp.route("/batches/<batch_number>/steps/<step_code>", methods=["POST"])
@roles_required("operator")
def record_step(batch_number: str, step_code: str) -> Response | str | tuple[str, int]:
    session = db_session()
    if request.form.get("check"):
        return _checked_step(batch_number, step_code)
    try:
        outcome = services.record_step(
            session, batch_number, step_code, values=_form_values(batch_number, step_code),
            user_id=g.user.id, signature=form_signature(Meaning.PERFORMED.value),
            verifier=_verifier(), scan=request.form.get("scan", "").strip() or None,
            scans=_scanned_lines("scans"),
            resources=_form_resources(batch_number, step_code),
        )
    except DomainError as error:
        # The form comes back with what was typed and the message at its field, at the
        # step (no redirect: a refused form has nothing to protect from a re-post).
        undo_failed_form(error)
        return _render_batch(batch_number, _kept_form(step_code, error)), error.status
    else:
        flash(f"step {step_code} recorded and signed"
              + ("; bag scanned: OK" if outcome.record.identity_scan else "")
              + (f"; labels of {len(outcome.record.scans)} bags scanned: OK"
                 if outcome.record.scans else "")
              + (f"; deviation {', '.join(d.number for d in outcome.deviations)} opened"
                 if outcome.deviations else "")
              + (f"; bags {', '.join(i.item_id for i in outcome.items)} created"
                 if outcome.items else ""),
              # An out-of-limit value is recorded, but it is no success: a warning.
              "warn" if outcome.deviations else "ok")
    return redirect(url_for("batches.batch_page", batch_number=batch_number) + f"#{step_code}")


def _checked_step(batch_number: str, step_code: str) -> str | tuple[str, int]:
    """The form's "Check" button: every reason the step would be refused for, shown at
    the step before anyone signs (SPEC §11 dry run); nothing is recorded, what was typed
    stays (never a password)."""
    try:
        result = services.check_step(
            db_session(), batch_number, step_code, user_id=g.user.id,
            resources=_form_resources(batch_number, step_code),
            verifier_username=request.form.get("verifier_username", "").strip() or None,
        )
    except DomainError as error:
        return _refused_form(batch_number, step_code, error, "The check")
    values = {k: v for k, v in request.form.items() if k not in SECRET_FIELDS}
    return _render_batch(batch_number, {
        "step": step_code, "values": values, "errors": {}, "summary": [],
        "title": "", "check": result,
    })


@bp.route("/batches/<batch_number>/steps/<step_code>/corrections", methods=["POST"])
@roles_required("operator")
def correct_step(batch_number: str, step_code: str) -> Response | tuple[str, int]:
    session = db_session()
    occurrence = request.form.get("occurrence", "")
    try:
        services.correct_step(
            session, batch_number, step_code, values=_form_values(batch_number, step_code),
            reason=request.form.get("reason", ""),
            occurrence=int(occurrence) if occurrence.isdigit() else None,
            user_id=g.user.id, signature=form_signature(Meaning.PERFORMED.value),
            verifier=_verifier(),
        )
    except DomainError as error:
        return _refused_form(batch_number, f"fix-{step_code}-{occurrence}", error,
                             "The correction")
    flash(f"step {step_code} corrected; the original stays in the record", "ok")
    return redirect(url_for("batches.batch_page", batch_number=batch_number) + f"#{step_code}")


@bp.route("/batches/<batch_number>/deviations", methods=["POST"])
@roles_required("operator", "qc", "qa")
def open_deviation(batch_number: str) -> Response | tuple[str, int]:
    try:
        deviation = services.open_deviation(
            db_session(), batch_number, severity=request.form.get("severity", ""),
            description=request.form.get("description", ""),
            step_code=request.form.get("step_code") or None, user_id=g.user.id,
        )
    except DomainError as error:
        return _refused_form(batch_number, "dev-new", error, "The deviation")
    flash(f"deviation {deviation.number} opened", "ok")
    return redirect(url_for("batches.batch_page", batch_number=batch_number) + "#deviations")


@bp.route("/deviations/<ref>/<action>", methods=["POST"])
@roles_required("qa")
def decide_deviation(ref: str, action: str) -> Response | tuple[str, int]:
    session = db_session()
    batch_number = request.form.get("batch_number", "")
    try:
        if action == "assess":
            deviation = services.assess_deviation(
                session, ref, assessment=request.form.get("text", ""),
                severity=request.form.get("severity") or None, user_id=g.user.id,
                signature=form_signature(Meaning.REVIEWED.value),
            )
        elif action == "close":
            deviation = services.close_deviation(
                session, ref, closure=request.form.get("text", ""), user_id=g.user.id,
                signature=form_signature(Meaning.APPROVED.value),
            )
        else:
            flash(f"unknown action {action}", "error")
            return redirect(url_for("batches.batch_list"))
    except DomainError as error:
        undo_failed_form(error)
        if batch_number and services.find_batch_number(session, batch_number) == batch_number:
            what = "The assessment" if action == "assess" else "The closure"
            return _render_batch(batch_number, _kept_form(f"dev-{ref}", error, what)), \
                error.status
        _say_refused(error)
    else:
        batch_number = deviation.batch_number
        flash(f"deviation {deviation.number} {deviation.status}", "ok")
    target = (url_for("batches.batch_page", batch_number=batch_number) + "#deviations"
              if batch_number else url_for("batches.batch_list"))
    return redirect(target)


@bp.route("/batches/<batch_number>/record.<fmt>")
@roles_required(*RECORD_ROLES)
def download_record(batch_number: str, fmt: str) -> Response:
    if fmt not in ("pdf", "json"):
        flash("the record exports as pdf or json", "error")
        return redirect(url_for("batches.batch_page", batch_number=batch_number))
    data, mimetype = export.export_batch(db_session(), batch_number, fmt)
    response = Response(data, mimetype=mimetype)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{batch_number}-batch-record.{fmt}"'
    )
    return response


def dashboard_panel(session: Session, user: Person) -> tuple[str, Markup] | None:
    """Batches in process with the step due next; QA sees what holds or awaits release."""
    if not user.has_role("operator", "qa"):
        return None
    active = services.list_batches(
        session, statuses=tuple(s.value for s in ACTIVE_BATCH_STATUSES)
    )
    if not active:
        return ("Batches in process", Markup('<p class="hint">No batch in process.</p>'))
    rows = []
    for batch in active[:20]:
        due = [step.name for step in services.next_steps(session, batch)]
        if services.Action.RELEASE in services.allowed_actions(batch.status):
            due = ["QA release"]
        rows.append(
            f'<tr><td><a href="{url_for("batches.batch_page", batch_number=batch.batch_number)}">'
            f"{escape(batch.batch_number)}</a></td><td>{escape(batch.status)}</td>"
            f"<td>{escape(' or '.join(due) or '-')}</td></tr>"
        )
    return ("Batches in process", Markup(
        '<table class="data"><tr><th>Batch</th><th>Status</th><th>Step due</th></tr>'
        + "".join(rows) + "</table>"
    ))
