"""Pages of the outcomes domain: the follow-up section of the patient page and the visit
form with its "Check grades" dry run (SPEC §16, §7b). Thin: form -> schema -> service."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from markupsafe import Markup
from marshmallow import ValidationError
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from gmp_mes import charts, localtime, registry
from gmp_mes.accounts import Principal
from gmp_mes.durations import format_duration
from gmp_mes.errors import DomainError, Forbidden, NotFound, ValidationFailed
from gmp_mes.http import db_session, form_signature, roles_required, undo_failed_form
from gmp_mes.models import Meaning
from gmp_mes.schemas import field_errors, form_fields
from outcomes import grading, services
from outcomes.models import Response as Outcome
from outcomes.schemas import FollowUpInSchema, GradesInSchema

bp = Blueprint("outcomes", __name__, template_folder="templates")

FOLLOW_UP_ROLES = ("clinician", "qa")
CHOICES = {
    "response": [r.value for r in Outcome],
    "hypotension": [h.value for h in grading.Hypotension],
    "hypoxia": [h.value for h in grading.Hypoxia],
    "consciousness": [c.value for c in grading.Consciousness],
    "seizure": [s.value for s in grading.Seizure],
    "motor": [m.value for m in grading.Motor],
    "cerebral_edema": [c.value for c in grading.CerebralEdema],
}


def patient_section(session: Session, user: Principal, coi_id: str) -> tuple[str, Markup] | None:
    """Provider of ``registry.patient_sections``: the follow-up visits, for clinicians
    and QA (the roles of GET /patients/{coi_id}/follow-up)."""
    if not user.has_role(*FOLLOW_UP_ROLES):
        return None
    visits = services.visits_of(session, coi_id)
    if not visits:
        return None
    refused = None
    try:
        evaluations = [services.evaluate_patient(session, coi_id, agreement)
                       for agreement in services.agreements().values()]
    except services.AgreementInvalid as exc:  # a bad config file must not hide the follow-up
        current_app.logger.error("%s", exc.detail)
        evaluations, refused = [], exc.detail
    html = render_template("outcomes/_visits.html", visits=visits, coi_id=coi_id,
                           evaluations=evaluations, agreements_refused=refused,
                           statements=services.statements_of(session, coi_id))
    return "Follow-up", Markup(html)


def _as_int(text: str | None) -> int | str | None:
    return int(text) if text is not None and text.isdigit() else text


def _form_body(form: dict[str, str], batch_number: str, visit: str) -> dict[str, Any]:
    """The flat page form as the API's body (the API's schema then checks it)."""
    body: dict[str, Any] = {"visit": visit, "batch_number": batch_number,
                            "alive": form.get("alive", "yes") != "no"}
    for key in ("response", "death_date", "reason"):
        if key in form:
            body[key] = form[key]
    if "corrects" in form:
        body["corrects"] = _as_int(form["corrects"])
    if "assessed_at" in form:
        try:
            body["assessed_at"] = localtime.parse_local(
                form["assessed_at"], localtime.zone_of(g.user)).isoformat()
        except ValueError:
            body["assessed_at"] = form["assessed_at"]  # the schema names the field
    if form.get("crs_assessed"):
        body["crs"] = {"fever": "crs_fever" in form,
                       "fever_masked_by_treatment": "crs_fever_masked" in form,
                       **{k: form[f"crs_{k}"] for k in ("hypotension", "hypoxia")
                          if f"crs_{k}" in form}}
    if form.get("icans_assessed"):
        body["icans"] = {"ice_score": _as_int(form.get("icans_ice_score")),
                         **{k: form[f"icans_{k}"]
                            for k in ("consciousness", "seizure", "motor", "cerebral_edema")
                            if f"icans_{k}" in form}}
        if body["icans"]["ice_score"] is None:
            del body["icans"]["ice_score"]
    return body


def _page_errors(messages: dict[str, list[str]]) -> dict[str, list[str]]:
    """Nested schema errors ("crs.hypoxia") under the form's field names (crs_hypoxia)."""
    return {key.replace(".", "_"): value for key, value in messages.items()}


def _flat(exc: ValidationError) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in field_errors(exc).items():
        raw = exc.messages.get(key) if isinstance(exc.messages, dict) else None
        if isinstance(raw, dict):
            for sub, msgs in raw.items():
                out[f"{key}_{sub}"] = [str(m) for m in (msgs if isinstance(msgs, list) else [msgs])]
        else:
            out[key] = value
    return out


@bp.route("/patients/<coi_id>/follow-up/<batch_number>/<visit>", methods=["GET", "POST"])
@roles_required(*FOLLOW_UP_ROLES)
def visit_page(coi_id: str, batch_number: str, visit: str) -> str | Response | tuple[str, int]:
    """The visit: its record and versions; for clinicians the form. "Check grades" (the
    button ``action=check``) shows the computed CRS and ICANS grades before anyone signs;
    "Sign" records."""
    session = db_session()
    views = [v for v in services.visits_of(session, coi_id)
             if v.visit.batch_number == batch_number and v.visit.visit == visit]
    if not views:
        raise NotFound(f"no visit {visit} of batch {batch_number} for patient {coi_id}")
    view = views[0]
    form = form_fields(request.form)
    errors: dict[str, list[str]] = {}
    error = None
    checked: services.Grades | None = None
    if request.method == "POST":
        if not g.user.has_role("clinician"):
            raise Forbidden("only clinicians record follow-up")
        body = _form_body(form, batch_number, visit)
        if request.form.get("action") == "check":
            try:
                grades_in = GradesInSchema().load(
                    {k: body[k] for k in ("crs", "icans") if k in body})
            except ValidationError as exc:
                errors = _flat(exc)
            else:
                checked = services.grades(grades_in["crs"], grades_in["icans"])
        else:
            try:
                data = FollowUpInSchema(exclude=("signature",)).load(body)
            except ValidationError as exc:
                errors = _flat(exc)
            else:
                try:
                    services.record_follow_up(
                        session, coi_id, visit=visit, batch_number=batch_number,
                        assessed_at=data["assessed_at"], response=data["response"],
                        crs=data["crs"], icans=data["icans"], alive=data["alive"],
                        death_date=data["death_date"], corrects=data["corrects"],
                        reason=data["reason"], user_id=g.user.id,
                        signature=form_signature(Meaning.PERFORMED.value))
                except ValidationFailed as exc:
                    undo_failed_form(exc)
                    errors = _page_errors(exc.errors or {})
                except DomainError as exc:
                    undo_failed_form(exc)
                    error = exc.detail
                else:
                    return redirect(url_for("outcomes.visit_page", coi_id=coi_id,
                                            batch_number=batch_number, visit=visit))
    status = 422 if errors else (409 if error else 200)
    versions = services.versions_of(session, view.visit.id) if view.record else []
    page = render_template("outcomes/visit.html", view=view, coi_id=coi_id, form=form,
                           errors=errors, error=error, checked=checked, versions=versions,
                           choices=CHOICES, meanings=[Meaning.PERFORMED.value])
    return (page, status) if status != 200 else page


# --- reports (SPEC §7b /reports) ----------------------------------------------------------
# /reports is an index other domains add to (vein-to-vein, manufacturing failure, control
# charts): each registers its report with ``gmp_mes.registry.add_report`` in init_app.

REPORT_ROLES = ("qa", "clinician")


@bp.route("/reports")
@roles_required()
def reports_index() -> str:
    entries = [(entry.endpoint, entry.title) for entry in registry.reports(current_app)
               if not entry.roles or g.user.has_role(*entry.roles)]
    return render_template("outcomes/reports.html", entries=entries)


def _report_query() -> tuple[dict[str, Any], dict[str, list[str]]]:
    from outcomes.schemas import OutcomeQuerySchema

    try:
        return OutcomeQuerySchema().load(request.args), {}
    except ValidationError as exc:
        return {"process": "CART-AUTO", "attribute": None}, field_errors(exc)


@bp.route("/reports/outcomes")
@roles_required(*REPORT_ROLES)
def outcome_report_page() -> str | tuple[str, int]:
    query, errors = _report_query()
    report = services.outcome_report(db_session(), query["process"])
    attributes = report.attributes
    attribute = query["attribute"] or (attributes[0] if attributes else None)
    chart = services.response_chart(report, attribute) if attribute and report.rows else None
    page = render_template("outcomes/outcomes_report.html", report=report, errors=errors,
                           attribute=attribute, attributes=attributes,
                           labels=services.visit_labels(report.visits),
                           chart=None if chart is None else charts.img_tag(chart))
    return (page, 422) if errors else page


# The forecast at the last count before harvest, one CSV column each (empty: none).
FORECAST_COLUMNS = ("model", "reason", "points", "as_of_day", "doubling_time_h",
                    "predicted_median", "predicted_low", "predicted_high", "target",
                    "p_target")


def csv_rows(report: services.OutcomeReport) -> list[list[str]]:
    """The report as CSV rows: one column per release test and per visit."""
    tests = sorted({t for r in report.rows for t in r.qc})

    def cell(value: object) -> str:
        return "" if value is None else str(value)

    head = ["coi_id", "batch_number", "process_version", "administered_at_utc", "dose",
            "dose_unit", *[f"qc_{t}" for t in tests], "expansion_counts", "expansion_days",
            "expansion_fold", "final_viability", *[f"response_{v}" for v in report.visits],
            "best_response", "worst_crs_grade", "worst_icans_grade", "alive",
            *[f"forecast_{name}" for name in FORECAST_COLUMNS]]
    rows = [head]
    for r in report.rows:
        rows.append([r.coi_id, r.batch_number, str(r.process_version),
                     localtime.in_utc(r.administered_at), cell(r.dose), cell(r.dose_unit),
                     *[cell(r.qc.get(t)) for t in tests], str(r.expansion.counts),
                     cell(r.expansion.days), cell(r.expansion.fold),
                     cell(r.expansion.final_viability),
                     *[r.responses.get(v, "") for v in report.visits],
                     cell(r.best_response), cell(r.worst_crs_grade), cell(r.worst_icans_grade),
                     "" if r.alive is None else ("yes" if r.alive else "no"),
                     *[cell(None if r.forecast is None else getattr(r.forecast, name))
                       for name in FORECAST_COLUMNS]])
    return rows


@bp.route("/reports/outcomes.csv")
@roles_required(*REPORT_ROLES)
def outcome_report_csv() -> Response:
    import csv
    import io

    query, errors = _report_query()
    if errors:
        raise ValidationFailed("bad report query", errors=errors)
    report = services.outcome_report(db_session(), query["process"])
    out = io.StringIO()
    csv.writer(out).writerows(csv_rows(report))
    return Response(out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="outcomes-{report.process}.csv"'})


@bp.route("/patients/<coi_id>/agreements/<code>/statements", methods=["POST"])
@roles_required("clinician")
def issue_statement(coi_id: str, code: str) -> Response | tuple[str, int]:
    """Sign the patient's statement under an outcome agreement (meaning ``approved``)."""
    try:
        services.issue_statement(db_session(), coi_id, code, user_id=g.user.id,
                                 signature=form_signature(Meaning.APPROVED.value))
    except DomainError as exc:
        undo_failed_form(exc)
        return render_template("error.html", status=exc.status, title="Not signed",
                               detail=exc.detail), exc.status
    return redirect(url_for("identity.patient_page", coi_id=coi_id) + "#agreements")


@bp.app_template_filter("iso_duration")
def iso_duration(delta: timedelta) -> str:
    return format_duration(delta)


@bp.route("/agreements")
@roles_required(*FOLLOW_UP_ROLES)
def agreements_page() -> str | tuple[str, int]:
    """The outcome agreements in force and their milestones; a bad file is named here
    (409 with its one-line reason), never a 500."""
    try:
        found, refused = list(services.agreements().values()), None
    except services.AgreementInvalid as exc:
        found, refused = [], exc.detail
    page = render_template("outcomes/agreements.html", agreements=found, refused=refused)
    return (page, 409) if refused else page


@bp.route("/agreement-statements/<int:statement_id>.pdf")
@roles_required(*FOLLOW_UP_ROLES)
def statement_pdf(statement_id: int) -> Response:
    view = services.get_statement(db_session(), statement_id)
    site = g.user.site
    pdf = services.statement_pdf(view, site.timezone if site is not None else None)
    return Response(pdf, mimetype="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="statement-{statement_id}.pdf"'})


@bp.route("/agreement-statements/<int:statement_id>.json")
@roles_required(*FOLLOW_UP_ROLES)
def statement_json(statement_id: int) -> Response:
    """The signed statement as the API answers it (content, digest, signature), as a
    file a hospital sends to the payer."""
    from outcomes.schemas import StatementSchema

    body = StatementSchema().dump(services.get_statement(db_session(), statement_id))
    return Response(json.dumps(body, indent=2, sort_keys=True), mimetype="application/json",
                    headers={"Content-Disposition":
                             f'attachment; filename="statement-{statement_id}.json"'})
