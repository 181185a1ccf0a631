"""HTTP API of the qc domain (SPEC §7): parse, authorise, call services, dump."""

from __future__ import annotations

from typing import Any

from flask import g
from flask_smorest import Blueprint

from batches import services as batches
from gmp_mes.http import db_session, roles_required
from qc import services
from qc.schemas import (
    DecisionSchema,
    InvalidateInSchema,
    QcOverviewSchema,
    QcResultInSchema,
    QcResultSchema,
    QueueEntrySchema,
    RejectInSchema,
    ReleaseInSchema,
    ReviewInSchema,
)

blp = Blueprint("qc_api", __name__, url_prefix="/api/v1",
                description="QC results, QC overview, QA release, conditional release, reject")


@blp.route("/batches/<batch_number>/qc-results", methods=["POST"])
@blp.arguments(QcResultInSchema)
@blp.response(201, QcResultSchema)
@roles_required("qc")
def record_result(body: dict[str, Any], batch_number: str) -> services.ResultAnswer:
    """Record a QC result (or, with `corrects` and `reason`, a correction: a new version).

    `passed` is computed against the batch's release specification, never entered.
    Signature meaning `performed`. Unknown test or a unit other than the spec's: 422.
    """
    result = services.record_result(
        db_session(), batch_number, test=body["test"], value=body["value"],
        outcome=body["outcome"], unit=body["unit"], method=body["method"],
        sample_item_id=body["sample_item_id"], corrects=body["corrects"],
        reason=body["reason"], user_id=g.user.id, signature=body["signature"],
    )
    return services.result_view(db_session(), result.id)


@blp.route("/batches/<batch_number>/qc-results/<int:result_id>/review", methods=["POST"])
@blp.arguments(ReviewInSchema)
@blp.response(201, QcResultSchema)
@roles_required("qc", "qa")
def review_result(
    body: dict[str, Any], batch_number: str, result_id: int
) -> services.ResultAnswer:
    """Second-person review (signature meaning `reviewed`), never by the analyst."""
    services.review_result(db_session(), result_id, user_id=g.user.id,
                           signature=body["signature"], batch_number=batch_number)
    return services.result_view(db_session(), result_id)


@blp.route("/batches/<batch_number>/qc-results/<int:result_id>/invalidate", methods=["POST"])
@blp.arguments(InvalidateInSchema)
@blp.response(201, QcResultSchema)
@roles_required("qc")
def invalidate_result(
    body: dict[str, Any], batch_number: str, result_id: int
) -> services.ResultAnswer:
    """Declare a result invalid (assay failure) with a reason; the test may be retested."""
    services.invalidate_result(db_session(), result_id, user_id=g.user.id,
                               signature=body["signature"], reason=body["reason"],
                               batch_number=batch_number)
    return services.result_view(db_session(), result_id)


@blp.route("/batches/<batch_number>/qc", methods=["GET"])
@blp.response(200, QcOverviewSchema)
@roles_required()
def qc_overview(batch_number: str) -> dict[str, object]:
    """Per test: required, pending, passed, failed, due time, results with signatures."""
    session = db_session()
    batch = batches.get_batch(session, batch_number)
    return {"batch_number": batch.batch_number, "batch_status": batch.status,
            "tests": services.qc_overview(session, batch_number)}


@blp.route("/batches/<batch_number>/release", methods=["POST"])
@blp.arguments(ReleaseInSchema)
@blp.response(201, DecisionSchema)
@roles_required("qa")
def release(body: dict[str, Any], batch_number: str) -> services.DecisionOutcome:
    """QA release (SPEC §5), signature meaning `released`.

    With `conditional: {"justification"}` tests marked release_before_result may be
    pending. On a conditionally released batch, a release without `conditional` is the
    final release (kind `final_release`): every pending result must have passed, and the
    signer must have performed or recorded no step or QC result of the batch. Refusals:
    403 `segregation_of_duties`; 409 with the first unmet condition as `code` and all of
    them in `problems` [{code, message}].
    """
    conditional = body["conditional"]
    decision = services.release_batch(
        db_session(), batch_number, user_id=g.user.id, signature=body["signature"],
        conditional=conditional is not None,
        justification=conditional["justification"] if conditional else None,
    )
    return services.decision_outcome(db_session(), decision)


@blp.route("/batches/<batch_number>/reject", methods=["POST"])
@blp.arguments(RejectInSchema)
@blp.response(201, DecisionSchema)
@roles_required("qa")
def reject(body: dict[str, Any], batch_number: str) -> services.DecisionOutcome:
    """QA rejection with a reason (signature meaning `rejected`): items become rejected."""
    decision = services.reject_batch(db_session(), batch_number, user_id=g.user.id,
                                     signature=body["signature"], reason=body["reason"])
    return services.decision_outcome(db_session(), decision)


@blp.route("/qa/release-queue", methods=["GET"])
@blp.response(200, QueueEntrySchema(many=True))
@roles_required("qa")
def release_queue() -> list[services.QueueEntry]:
    """Batches awaiting release, on hold, or conditionally released, with what is missing."""
    return services.release_queue(db_session())
