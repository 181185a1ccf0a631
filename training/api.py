"""HTTP API of the training domain (SPEC §12): parse, authorise, call services, dump."""

from __future__ import annotations

from typing import Any

from flask import g
from flask_smorest import Blueprint

from gmp_mes.http import db_session, roles_required
from training import services
from training.schemas import (
    GrantInSchema,
    PersonQualificationsSchema,
    RecordSchema,
    RevokeInSchema,
)

blp = Blueprint("training_api", __name__, url_prefix="/api/v1",
                description="Training records: qualifications granted, revoked, listed")


def _view(username: str, record_id: int) -> services.RecordView:
    person = services.qualifications_of(db_session(), username)
    return next(view for view in person.records if view.id == record_id)


@blp.route("/users/<username>/qualifications", methods=["POST"])
@blp.arguments(GrantInSchema)
@blp.response(201, RecordSchema)
@roles_required("qa", "admin")
def grant(body: dict[str, Any], username: str) -> services.RecordView:
    """Grant a qualification (a training record, signature meaning `approved`), valid from
    now until `valid_until`. A renewal is a new record; the old one stays. 403
    `segregation_of_duties` for a grant to yourself."""
    record = services.grant_qualification(
        db_session(), username, code=body["code"], valid_until=body["valid_until"],
        user_id=g.user.id, signature=body["signature"])
    return _view(record.user.username, record.id)


@blp.route("/users/<username>/qualifications/<code>/revoke", methods=["POST"])
@blp.arguments(RevokeInSchema)
@blp.response(200, RecordSchema(many=True))
@roles_required("qa", "admin")
def revoke(body: dict[str, Any], username: str, code: str) -> list[services.RecordView]:
    """Revoke the qualification: every record of `code` still in force, from now, with the
    reason (audited). 404 when never held; 409 `invalid_transition` when none is in force."""
    revoked = services.revoke_qualification(db_session(), username, code,
                                            reason=body["reason"], user_id=g.user.id)
    ids = {record.id for record in revoked}
    person = services.qualifications_of(db_session(), username)
    return [view for view in person.records if view.id in ids]


@blp.route("/users/<username>/qualifications", methods=["GET"])
@blp.response(200, PersonQualificationsSchema)
@roles_required()
def list_qualifications(username: str) -> services.PersonRecords:
    """A person's training records, current and past, each with its status (`valid`,
    `expired`, `revoked`), and the standing in each code."""
    return services.qualifications_of(db_session(), username)
