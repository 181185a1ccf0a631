"""HTTP API of the outcomes domain (SPEC §16): parse, authorise, call services, dump."""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify
from flask_smorest import Blueprint

from gmp_mes.http import db_session, roles_required
from outcomes import services
from outcomes.models import FollowUpRecord
from outcomes.schemas import (
    FollowUpInSchema,
    FollowUpRecordSchema,
    FollowUpSchema,
    GradesInSchema,
    GradesSchema,
    OutcomeQuerySchema,
    OutcomeReportSchema,
    StatementInSchema,
    StatementSchema,
)

blp = Blueprint("outcomes_api", __name__, url_prefix="/api/v1",
                description="Follow-up after the infusion: visits, records, computed grades")


@blp.route("/patients/<coi_id>/follow-up", methods=["GET"])
@blp.response(200, FollowUpSchema)
@roles_required("clinician", "qa")
def follow_up(coi_id: str) -> dict[str, Any]:
    """The patient's visits with due time and state (`due`, `done`, `overdue`; `ended`
    after a recorded death), each with its current record."""
    visits = services.visits_of(db_session(), coi_id)
    return {"coi_id": coi_id.strip().upper(), "visits": visits}


@blp.route("/patients/<coi_id>/follow-up", methods=["POST"])
@blp.arguments(FollowUpInSchema)
@blp.response(201, FollowUpRecordSchema)
@roles_required("clinician")
def record_follow_up(body: dict[str, Any], coi_id: str) -> FollowUpRecord:
    """Record a visit, signed (meaning `performed`); with `corrects` and `reason` a
    correction (a new version, the original kept). `crs_grade` and `icans_grade` are
    computed from the elements (ASTCT 2019), never accepted."""
    return services.record_follow_up(
        db_session(), coi_id, visit=body["visit"], batch_number=body["batch_number"],
        assessed_at=body["assessed_at"], response=body["response"], crs=body["crs"],
        icans=body["icans"], alive=body["alive"], death_date=body["death_date"],
        corrects=body["corrects"], reason=body["reason"], user_id=g.user.id,
        signature=body["signature"])


@blp.route("/follow-up/grades", methods=["POST"])
@blp.arguments(GradesInSchema)
@blp.response(200, GradesSchema)
@roles_required("clinician", "qa")
def check_grades(body: dict[str, Any]) -> services.Grades:
    """Dry run: the CRS and ICANS grades the elements give, nothing recorded."""
    return services.grades(body["crs"], body["icans"])


@blp.route("/reports/outcomes", methods=["GET"])
@blp.arguments(OutcomeQuerySchema, location="query")
@blp.response(200, OutcomeReportSchema)
@roles_required("qa", "clinician")
def outcome_report(query: dict[str, Any]) -> services.OutcomeReport:
    """Per infused batch of the process, pseudonymised by COI: release QC values, dose,
    expansion summary, the expansion forecast at the last count before the harvest day
    (SPEC §15; null when the batch's process declares no `[forecast]`), response at each
    visit, best response, worst CRS/ICANS grades."""
    return services.outcome_report(db_session(), query["process"])


@blp.route("/patients/<coi_id>/follow-up/fhir", methods=["GET"])
@blp.response(200, {"type": "object", "description": "FHIR R5 Bundle (collection)"})
@roles_required("clinician", "qa")
def follow_up_fhir(coi_id: str) -> Response:
    """The follow-up as a FHIR R5 Bundle (collection): the infused
    BiologicallyDerivedProduct and Observations of response, CRS and ICANS grade (their
    elements as components) and vital status, each naming the patient by COI."""
    response = jsonify(services.fhir_follow_up(db_session(), coi_id))
    response.content_type = "application/fhir+json"
    return response


@blp.route("/patients/<coi_id>/agreements/<code>", methods=["GET"])
@blp.response(200, {"type": "object", "description": "milestones with met/not_met/pending"})
@roles_required("clinician", "qa")
def agreement_evaluation(coi_id: str, code: str) -> Response:
    """The patient's milestones under the outcome agreement now (unsigned)."""
    return jsonify(services.evaluate_patient(db_session(), coi_id,
                                             services.get_agreement(code)))


@blp.route("/patients/<coi_id>/agreements/<code>/statements", methods=["POST"])
@blp.arguments(StatementInSchema)
@blp.response(201, StatementSchema)
@roles_required("clinician")
def issue_statement(body: dict[str, Any], coi_id: str, code: str) -> services.StatementView:
    """Evaluate and sign (meaning `approved`) the statement a hospital sends to the payer;
    the signature's digest binds its content."""
    statement = services.issue_statement(db_session(), coi_id, code, user_id=g.user.id,
                                         signature=body["signature"])
    return services.get_statement(db_session(), statement.id)


@blp.route("/agreement-statements/<int:statement_id>", methods=["GET"])
@blp.response(200, StatementSchema)
@roles_required("clinician", "qa")
def get_statement(statement_id: int) -> services.StatementView:
    """A signed statement as JSON, with `signature_binds` (content unchanged since signing)."""
    return services.get_statement(db_session(), statement_id)


@blp.route("/agreement-statements/<int:statement_id>/pdf", methods=["GET"])
@blp.response(200, {"type": "string", "format": "binary"}, content_type="application/pdf")
@roles_required("clinician", "qa")
def statement_pdf(statement_id: int) -> Response:
    """The signed statement as PDF."""
    view = services.get_statement(db_session(), statement_id)
    site = g.user.site
    pdf = services.statement_pdf(view, site.timezone if site is not None else None)
    return Response(pdf, mimetype="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="statement-{statement_id}.pdf"'})
