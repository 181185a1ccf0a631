"""HTTP API of the batches domain (SPEC §7): parse, authorise, call services, dump."""

from __future__ import annotations

from typing import Any

from flask import Response, g
from flask_smorest import Blueprint

from batches import export, record, services
from batches.models import Batch, Deviation
from batches.schemas import (
    AssessInSchema,
    BatchInSchema,
    BatchQuerySchema,
    BatchRecordQuerySchema,
    BatchSchema,
    BatchSummarySchema,
    CloseInSchema,
    CorrectionInSchema,
    DeviationInSchema,
    DeviationSchema,
    RecordItemSchema,
    StepCheckInSchema,
    StepCheckSchema,
    StepInSchema,
    StepOutcomeSchema,
)
from gmp_mes.errors import ValidationFailed
from gmp_mes.http import db_session, roles_required

blp = Blueprint("batches_api", __name__, url_prefix="/api/v1",
                description="Batches, step records, deviations, export")


@blp.route("/batches", methods=["GET"])
@blp.arguments(BatchQuerySchema, location="query")
@blp.response(200, BatchSummarySchema(many=True))
@roles_required()
def list_batches(query: dict[str, Any]) -> list[Batch]:
    """Batches, newest first; `status` filters (comma-separated)."""
    statuses = tuple(s for s in (query["status"] or "").split(",") if s)
    return services.list_batches(db_session(), statuses=statuses)


@blp.route("/batches", methods=["POST"])
@blp.arguments(BatchInSchema)
@blp.response(201, BatchSchema)
@roles_required("operator")
def start_batch(body: dict[str, Any]) -> dict[str, Any]:
    """Start a batch from a starting material within its hold time (else 409 `expired`)."""
    session = db_session()
    batch = services.start_batch(
        session, item_id=body["item_id"], user_id=g.user.id,
        process_code=body["process_code"], process_version=body["process_version"],
    )
    return record.executed_record(session, batch.batch_number, full=False)


@blp.route("/batches/<batch_number>", methods=["GET"])
@blp.arguments(BatchRecordQuerySchema, location="query")
@blp.response(200, BatchSchema)
@roles_required()
def get_batch(query: dict[str, Any], batch_number: str) -> dict[str, Any]:
    """The batch with steps, items, QC, deviations and release state; the step history
    in pages (the newest ``steps_limit`` records; ``steps_older`` is the cursor of older
    ones)."""
    return record.executed_record(db_session(), batch_number, full=False,
                                  steps_limit=query["steps_limit"],
                                  steps_before=query["steps_before"])


@blp.route("/batches/<batch_number>/steps/<step_code>", methods=["POST"])
@blp.arguments(StepInSchema)
@blp.response(201, StepOutcomeSchema)
@roles_required("operator")
def record_step(body: dict[str, Any], batch_number: str, step_code: str) -> dict[str, Any]:
    """Record a step in order, signed; out-of-limit values open a deviation."""
    session = db_session()
    outcome = services.record_step(
        session, batch_number, step_code, values=body["values"], user_id=g.user.id,
        signature=body["signature"], verifier=body["verifier"], scan=body["scan"],
        scans=body["scans"], resources=body["resources"],
    )
    return _outcome(outcome, batch_number)


@blp.route("/batches/<batch_number>/steps/<step_code>/check", methods=["POST"])
@blp.arguments(StepCheckInSchema)
@blp.response(200, StepCheckSchema)
@roles_required("operator")
def check_step(
    body: dict[str, Any], batch_number: str, step_code: str
) -> services.StepCheckResult:
    """Dry run: every reason the step would be refused for now; nothing is recorded."""
    verifier = body["verifier"]
    return services.check_step(
        db_session(), batch_number, step_code, user_id=g.user.id,
        resources=body["resources"], verifier_username=verifier["username"] if verifier else None,
    )


@blp.route("/batches/<batch_number>/steps/<step_code>/corrections", methods=["POST"])
@blp.arguments(CorrectionInSchema)
@blp.response(201, StepOutcomeSchema)
@roles_required("operator")
def correct_step(body: dict[str, Any], batch_number: str, step_code: str) -> dict[str, Any]:
    """Correct a step record: a new signed version with a reason; the original stays."""
    session = db_session()
    outcome = services.correct_step(
        session, batch_number, step_code, values=body["values"], reason=body["reason"],
        occurrence=body["occurrence"], user_id=g.user.id, signature=body["signature"],
        verifier=body["verifier"],
    )
    return _outcome(outcome, batch_number)


def _outcome(outcome: services.StepOutcome, batch_number: str) -> dict[str, Any]:
    batch = services.get_batch(db_session(), batch_number)
    return {
        "record": outcome.record,
        "deviations": outcome.deviations,
        "items": RecordItemSchema(many=True).dump(outcome.items),
        "batch_status": batch.status,
    }


@blp.route("/batches/<batch_number>/deviations", methods=["POST"])
@blp.arguments(DeviationInSchema)
@blp.response(201, DeviationSchema)
@roles_required("operator", "qc", "qa")
def open_deviation(body: dict[str, Any], batch_number: str) -> Deviation:
    """Report a deviation; a major or critical one puts the batch on hold."""
    return services.open_deviation(
        db_session(), batch_number, severity=body["severity"],
        description=body["description"], step_code=body["step_code"], user_id=g.user.id,
    )


@blp.route("/deviations/<ref>", methods=["GET"])
@blp.response(200, DeviationSchema)
@roles_required()
def get_deviation(ref: str) -> Deviation:
    """A deviation by number (e.g. CART-26-0001-D01) or id."""
    return services.get_deviation(db_session(), ref)


@blp.route("/deviations/<ref>/assess", methods=["POST"])
@blp.arguments(AssessInSchema)
@blp.response(200, DeviationSchema)
@roles_required("qa")
def assess_deviation(body: dict[str, Any], ref: str) -> Deviation:
    """QA's signed impact assessment (may reclassify the severity)."""
    return services.assess_deviation(
        db_session(), ref, assessment=body["assessment"], severity=body["severity"],
        user_id=g.user.id, signature=body["signature"],
    )


@blp.route("/deviations/<ref>/close", methods=["POST"])
@blp.arguments(CloseInSchema)
@blp.response(200, DeviationSchema)
@roles_required("qa")
def close_deviation(body: dict[str, Any], ref: str) -> Deviation:
    """QA closes an assessed deviation with a signed conclusion."""
    return services.close_deviation(
        db_session(), ref, closure=body["closure"], user_id=g.user.id,
        signature=body["signature"],
    )


@blp.route("/batches/<batch_number>/record.<fmt>", methods=["GET"])
@blp.doc(responses={"200": {
    "description": "the executed batch record (record.pdf or record.json)",
    "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object"}}},
}})
@roles_required("operator", "qc", "qa", "admin")
def export_record(batch_number: str, fmt: str) -> Response:
    """The executed batch record as PDF or JSON."""
    if fmt not in ("pdf", "json"):
        raise ValidationFailed("format must be pdf or json", errors={"format": ["pdf or json"]})
    data, mimetype = export.export_batch(db_session(), batch_number, fmt)
    response = Response(data, mimetype=mimetype)
    response.headers["Content-Disposition"] = (
        f'inline; filename="{batch_number}-batch-record.{fmt}"'
    )
    return response
