"""HTTP API of the rooms domain (SPEC §12): parse, authorise, call services, dump."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from flask import g
from flask_smorest import Blueprint

from gmp_mes.http import db_session, roles_required
from rooms import services
from rooms.schemas import (
    EmAlertLimitInSchema,
    EmAlertLimitQuerySchema,
    EmAlertLimitSchema,
    EmOutcomeSchema,
    EmResultInSchema,
    LineClearanceSchema,
    RoomDetailSchema,
    RoomInSchema,
    RoomListQuerySchema,
    RoomQuerySchema,
    RoomSchema,
    RoomSignedSchema,
)

blp = Blueprint("rooms_api", __name__, url_prefix="/api/v1",
                description="Rooms: grades, occupancy, line clearance, environmental "
                            "monitoring")


@blp.route("/rooms", methods=["POST"])
@blp.arguments(RoomInSchema)
@blp.response(201, RoomSchema)
@roles_required("admin")
def create_room(body: dict[str, Any]) -> services.RoomView:
    """Register a room of a site with its grade (A cleanest to D)."""
    session = db_session()
    room = services.create_room(session, code=body["code"], site_code=body["site"],
                                grade=body["grade"], name=body["name"], user_id=g.user.id)
    return services.room_view(session, room.code)


@blp.route("/rooms", methods=["GET"])
@blp.arguments(RoomListQuerySchema, location="query")
@blp.response(200, RoomSchema(many=True))
@roles_required()
def list_rooms(query: dict[str, Any]) -> list[services.RoomView]:
    """Rooms in code order, each with the COI it last served (filter `site`)."""
    return services.list_rooms(db_session(), site_code=query["site"], limit=query["limit"],
                               offset=query["offset"])


@blp.route("/rooms/<code>", methods=["GET"])
@blp.arguments(RoomQuerySchema, location="query")
@blp.response(200, RoomDetailSchema)
@roles_required()
def get_room(query: dict[str, Any], code: str) -> dict[str, Any]:
    """The room: grade, the COI it last served, and its trails newest first by key
    (`uses`, `clearances`, `em_results`; `*_before` take the `*_older` cursors;
    `sample_type` filters the EM results)."""
    session = db_session()
    view = services.room_view(session, code)
    record = services.room_record(session, view.code, limit=query["limit"],
                                  uses_before=query["uses_before"],
                                  clearances_before=query["clearances_before"],
                                  em_before=query["em_before"],
                                  sample_type=query["sample_type"])
    return {**vars(view), "last_coi": view.last_coi, "last_batch": view.last_batch,
            **vars(record)}


@blp.route("/rooms/<code>/clearances", methods=["POST"])
@blp.arguments(RoomSignedSchema)
@blp.response(201, LineClearanceSchema)
@roles_required("operator")
def perform_clearance(body: dict[str, Any], code: str) -> Any:
    """A line clearance after the room's last use, signed `performed`: the room is empty of
    the previous patient's material, labels and documents. It admits another COI only once
    a second person verifies it."""
    return services.perform_clearance(db_session(), code, user_id=g.user.id,
                                      signature=body["signature"])


@blp.route("/rooms/<code>/clearances/<int:clearance_id>/verify", methods=["POST"])
@blp.arguments(RoomSignedSchema)
@blp.response(200, LineClearanceSchema)
@roles_required("operator", "qa")
def verify_clearance(body: dict[str, Any], code: str, clearance_id: int) -> Any:
    """The second person's verification, signed `verified`. 403 `segregation_of_duties`
    for the person who performed it; 409 `clearance_superseded` when the room was used
    since it was performed."""
    return services.verify_clearance(db_session(), services.normal_code(code), clearance_id,
                                     user_id=g.user.id, signature=body["signature"])


@blp.route("/rooms/<code>/em-results", methods=["POST"])
@blp.arguments(EmResultInSchema)
@blp.response(201, EmOutcomeSchema)
@roles_required("qc", "operator")
def record_em_result(body: dict[str, Any], code: str) -> SimpleNamespace:
    """An EM result, signed `performed`; `passed` is computed against the EU GMP Annex 1
    action limit of the room's grade. A failure raises `em_excursion` and opens a deviation
    (critical in A and B, major otherwise) on every batch with a step in the room since the
    last passed result of that sample type; at or above the site's alert limit within the
    action limit: passed with a `warning`."""
    outcome = services.record_em_result(
        db_session(), code, sample_type=body["sample_type"], value=body["value"],
        sampled_at=body["sampled_at"], location=body["location"], user_id=g.user.id,
        signature=body["signature"])
    return SimpleNamespace(**{c: getattr(outcome.result, c) for c in (
        "id", "room_code", "grade", "sample_type", "value", "sampled_at", "location",
        "action_limit", "alert_limit", "passed", "alert_level", "recorder", "recorded_at",
        "signature")}, warning=outcome.warning, deviations=outcome.deviations,
        released_batches=outcome.released)


@blp.route("/em-alert-limits", methods=["POST"])
@blp.arguments(EmAlertLimitInSchema)
@blp.response(201, EmAlertLimitSchema)
@roles_required("admin")
def set_alert_limit(body: dict[str, Any]) -> Any:
    """A site's EM alert limit for a grade and sample type (replaces the one in force)."""
    return services.set_alert_limit(db_session(), site_code=body["site"], grade=body["grade"],
                                    sample_type=body["sample_type"],
                                    alert_limit=body["alert_limit"], user_id=g.user.id)


@blp.route("/em-alert-limits", methods=["GET"])
@blp.arguments(EmAlertLimitQuerySchema, location="query")
@blp.response(200, EmAlertLimitSchema(many=True))
@roles_required()
def alert_limits(query: dict[str, Any]) -> Any:
    """The EM alert limits set (filter `site`)."""
    return services.alert_limits(db_session(), query["site"])
