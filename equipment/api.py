"""HTTP API of the equipment domain (SPEC §11): parse, authorise, call services, dump."""

from __future__ import annotations

from typing import Any

from flask import Response, g
from flask_smorest import Blueprint
from marshmallow import RAISE

from equipment import services
from equipment.schemas import (
    EquipmentDetailSchema,
    EquipmentInSchema,
    EquipmentListQuerySchema,
    EquipmentQuerySchema,
    EquipmentSchema,
    EventInSchema,
    EventSchema,
)
from gmp_mes.http import commit_unit_of_work, db_session, roles_required, writes
from labels.http import LABEL_RESPONSES, LabelQuerySchema, label_file, label_request

blp = Blueprint("equipment_api", __name__, url_prefix="/api/v1",
                description="Equipment: registry, signed logbook, status, use log")


def _detail(equipment_id: str, query: dict[str, Any]) -> dict[str, Any]:
    session = db_session()
    view = services.equipment_view(session, equipment_id)
    book = services.logbook(session, view.equipment_id, events_limit=query["events_limit"],
                            events_before=query["events_before"],
                            uses_limit=query["uses_limit"], uses_before=query["uses_before"])
    return {**vars(view), "events": book.events,
            "events_older": book.events_older, "uses": book.uses, "uses_older": book.uses_older,
            "labels": services.equipment_labels(session, view.equipment_id)}


@blp.route("/equipment", methods=["POST"])
@blp.arguments(EquipmentInSchema)
@blp.response(201, EquipmentSchema)
@roles_required("admin")
def register(body: dict[str, Any]) -> services.EquipmentView:
    """Register a piece of equipment (`equipment_id` is what its EQP label carries)."""
    session = db_session()
    equipment = services.register_equipment(
        session, equipment_id=body["equipment_id"], type=body["type"], name=body["name"],
        site_code=body["site"], calibration_interval=body["calibration_interval"],
        cleaning_required=body["cleaning_required"], user_id=g.user.id)
    return services.equipment_view(session, equipment.equipment_id)


@blp.route("/equipment", methods=["GET"])
@blp.arguments(EquipmentListQuerySchema, location="query")
@blp.response(200, EquipmentSchema(many=True))
@roles_required()
def list_equipment(query: dict[str, Any]) -> list[services.EquipmentView]:
    """Equipment in id order with its status (filters `site`, `type`; a gmp-mes extension)."""
    return services.list_equipment(db_session(), site_code=query["site"], type=query["type"],
                                   limit=query["limit"], offset=query["offset"])


@blp.route("/equipment/<equipment_id>", methods=["GET"])
@blp.arguments(EquipmentQuerySchema, location="query")
@blp.response(200, EquipmentDetailSchema)
@roles_required()
def get_equipment(query: dict[str, Any], equipment_id: str) -> dict[str, Any]:
    """The equipment with its computed `status` (`in_service`, `out_of_service`,
    `calibration_overdue`), calibration valid until, and the logbook: `events` and `uses`,
    newest first, by key (`events_before`/`uses_before` take the `*_older` cursors)."""
    return _detail(equipment_id, query)


@blp.route("/equipment/<equipment_id>/events", methods=["POST"])
@blp.arguments(EventInSchema)
@blp.response(201, EventSchema)
@roles_required("operator", "qa", "admin")
def record_event(body: dict[str, Any], equipment_id: str) -> Any:
    """A signed logbook entry (signature meaning `performed`): `calibrated` (`valid_until`,
    default now plus the calibration interval), `maintained`, `cleaned`, `out_of_service`
    (`reason` required), `returned_to_service`. 409 `invalid_transition` for out of service
    twice or a return of equipment in service."""
    return services.record_event(
        db_session(), equipment_id, kind=body["kind"], user_id=g.user.id,
        signature=body["signature"], reason=body["reason"], valid_until=body["valid_until"])


@blp.route("/equipment/<equipment_id>/label", methods=["GET"])
# A misspelt option (reprnt=true) must not silently print an original: unknown -> 422.
@blp.arguments(LabelQuerySchema, location="query", unknown=RAISE)
@blp.doc(responses=LABEL_RESPONSES)
@roles_required("operator", "admin")
@writes
def equipment_label(query: dict[str, Any], equipment_id: str) -> Response:
    """The equipment label (payload kind `EQP`, COI field `-`, no expiry) as png, svg, pdf
    or zpl, every print recorded; `preview=true` a marked preview that records nothing."""
    request, preview = label_request(query)
    if preview:
        return label_file(services.preview_equipment_label(db_session(), equipment_id, request))
    printed = services.print_equipment_label(db_session(), equipment_id, request,
                                             user_id=g.user.id)
    commit_unit_of_work()  # the print is recorded; render with no lock held
    return label_file(printed)
