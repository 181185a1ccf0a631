"""HTTP API of the logistics domain (SPEC §14): parse, authorise, call services, dump."""

from __future__ import annotations

from typing import Any

from flask import g, request
from flask_smorest import Blueprint

from gmp_mes import paging
from gmp_mes.errors import BadRequest, DomainError
from gmp_mes.http import db_session, roles_except, roles_required
from logistics import services
from logistics.models import Shipment
from logistics.schemas import (
    DispositionInSchema,
    LogSummarySchema,
    ReadingsInSchema,
    ReceiptOutSchema,
    ReceiveInSchema,
    ShipmentDetailSchema,
    ShipmentInSchema,
    ShipmentListSchema,
    ShipmentQuerySchema,
    StorageInSchema,
    StorageSchema,
)

blp = Blueprint("logistics_api", __name__, url_prefix="/api/v1",
                description="Chain of condition: shipments, temperature logs, receipt and "
                            "reconciliation, QA's disposition (SPEC §14)")

# A 30-day log at one reading a minute is about 1.3 MB of CSV; the application's 1 MiB
# request limit stays for every other route.
LOG_MAX_BYTES = 16 * 1024 * 1024
LOG_ENDPOINTS = {"logistics_api.upload_temperature_log", "logistics.upload_log"}


def allow_large_log(endpoint: str | None, _values: Any) -> None:
    """Raise the request size limit for the temperature-log uploads only. A URL value
    preprocessor runs before every ``before_request`` hook (the CSRF check reads the form),
    so the limit is in place before anything reads the body."""
    if endpoint in LOG_ENDPOINTS:
        request.max_content_length = LOG_MAX_BYTES


blp.url_value_preprocessor(allow_large_log)


def shipment_detail(shipment_id: str) -> dict[str, Any]:
    """What ``GET /shipments/{id}`` answers (also after a write)."""
    session = db_session()
    shipment = services.get_shipment(session, shipment_id)
    return {
        **{column: getattr(shipment, column) for column in (
            "shipment_id", "from_site", "to_site", "min_c", "max_c", "shipper_id",
            "logger_id", "courier", "status", "shipped_at", "received_at", "hold",
            "holding", "decision", "justification", "decided_at", "decision_signature")},
        "items": services.shipment_items(session, shipment.shipment_id),
        "temperature_log": services.log_summary(
            services.temperature_log(session, shipment.shipment_id)),
        "receipts": services.receipts_of(session, shipment.shipment_id),
    }


class UnsupportedMediaType(DomainError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


@blp.route("/shipments", methods=["POST"])
@blp.arguments(ShipmentInSchema)
@blp.response(201, ShipmentDetailSchema)
@roles_required(*services.SHIPPERS)
def create_shipment(body: dict[str, Any]) -> dict[str, Any]:
    """Ship `items` (ids or scanned labels) from `from_site` to `to_site` under
    `condition` (`min_c`, `max_c`), with optional `shipper_id`, `logger_id`, `courier`:
    every item is shipped (custody `ship`) in one transaction; any refusal ships nothing
    (its problem names the `item_id`)."""
    shipment = services.create_shipment(
        db_session(), items=body["items"], from_site=body["from_site"],
        to_site=body["to_site"], min_c=body["condition"]["min_c"],
        max_c=body["condition"]["max_c"], shipper_id=body["shipper_id"],
        logger_id=body["logger_id"], courier=body["courier"], user=g.user)
    return shipment_detail(shipment.shipment_id)


@blp.route("/shipments", methods=["GET"])
@blp.arguments(ShipmentQuerySchema, location="query")
@blp.response(200, ShipmentListSchema)
@roles_required()
def list_shipments(query: dict[str, Any]) -> dict[str, Any]:
    """Shipments, newest first, paged (`page`, `size`); `site` those leaving or reaching
    it."""
    number, size = paging.requested({"page": str(query["page"]), "size": str(query["size"])})
    rows: list[Shipment] = services.list_shipments(
        db_session(), limit=size + 1, offset=(number - 1) * size,
        site=(query["site"] or "").strip().upper() or None)
    shown, page = paging.cut(rows, number, size)
    return {"shipments": shown, "page": number, "size": size, "more": page.has_next}


@blp.route("/shipments/<shipment_id>", methods=["GET"])
@blp.response(200, ShipmentDetailSchema)
@roles_required()
def get_shipment(shipment_id: str) -> dict[str, Any]:
    """The shipment: items (received when), condition, the temperature log's summary,
    receipts with their reconciliation, hold and QA's disposition with its signature."""
    return shipment_detail(shipment_id)


@blp.route("/shipments/<shipment_id>/temperature-log", methods=["POST"])
@blp.doc(requestBody={"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}, "example":
                 "timestamp,temperature_c\n2026-03-01T08:00:00Z,-152.4\n"},
    "application/json": {"schema": ReadingsInSchema}}})
@blp.response(201, LogSummarySchema)
@roles_except("admin")
def upload_temperature_log(shipment_id: str) -> services.LogSummary:
    """The shipment's temperature log: `text/csv` with the header `timestamp,temperature_c`
    (ISO 8601 times with their UTC offset, as data loggers export), or JSON `{"readings":
    [{"at", "c"}]}` → `readings`, `min_c`, `max_c`, `excursions` (`start`, `end`,
    `minutes`, `extreme_c`: a run of readings outside the condition, to the first reading
    back inside), `gaps` (intervals longer than 3x the median sampling interval). A bad
    log is 422 `temperature_log_invalid` naming the line (`line`) or reading; nothing is
    stored. One log per shipment (409 `temperature_log_exists`)."""
    session = db_session()
    if request.mimetype == "text/csv":
        log = services.upload_log(session, shipment_id, data=request.get_data(), user=g.user)
    elif request.is_json:
        body = request.get_json()
        if not isinstance(body, dict) or set(body) != {"readings"}:
            raise BadRequest('the JSON body is {"readings": [{"at", "c"}, ...]}')
        log = services.upload_log(session, shipment_id, readings=body["readings"],
                                  user=g.user)
    else:
        raise UnsupportedMediaType("send the log as text/csv or application/json")
    summary = services.log_summary(log)
    assert summary is not None
    return summary


@blp.route("/shipments/<shipment_id>/receive", methods=["POST"])
@blp.arguments(ReceiveInSchema)
@blp.response(201, ReceiptOutSchema)
@roles_required(*services.SHIPPERS)
def receive_shipment(body: dict[str, Any], shipment_id: str) -> services.ReceiptOutcome:
    """Receive at `site` by the scanned label of every bag (`payloads`, optional
    `location`): the shipment's bags are received (custody `receive`); `reconciliation`
    lists the shipment's items not scanned (`missing`, still in transit) and labels of
    anything else (`unexpected`, each with its `code`; they receive nothing). A log with
    an excursion, or a `logger_id` and no log, holds the items (`hold`
    `temperature_excursion` / `temperature_unknown`) and alerts QA."""
    return services.receive_shipment(db_session(), shipment_id, site=body["site"],
                                     payloads=body["payloads"], location=body["location"],
                                     user=g.user)


@blp.route("/shipments/<shipment_id>/disposition", methods=["POST"])
@blp.arguments(DispositionInSchema)
@blp.response(201, ShipmentDetailSchema)
@roles_required("qa")
def decide_shipment(body: dict[str, Any], shipment_id: str) -> dict[str, Any]:
    """QA's signed disposition of a held shipment: `accept` with `justification`
    (signature meaning `approved`) lifts the hold; `reject` (meaning `rejected`) rejects
    its items. The hold's alerts close. 409 `not_held` when there is no hold to decide."""
    services.decide_shipment(db_session(), shipment_id, decision=body["decision"],
                             justification=body["justification"], user=g.user,
                             signature=body["signature"])
    return shipment_detail(shipment_id)


@blp.route("/storage", methods=["POST"])
@blp.arguments(StorageInSchema)
@blp.response(201, StorageSchema)
@roles_required("admin")
def create_storage(body: dict[str, Any]) -> services.Occupancy:
    """A storage unit: `code` `SITE/FREEZER/RACK/BOX`, `positions` (count), `condition`
    (`min_c`, `max_c`). 409 `already_exists` for a code in use."""
    session = db_session()
    unit = services.create_unit(session, code=body["code"], positions=body["positions"],
                                min_c=body["condition"]["min_c"],
                                max_c=body["condition"]["max_c"], user=g.user)
    return services.occupancy(session, unit.code)


@blp.route("/storage/<path:code>", methods=["GET"])
@blp.response(200, StorageSchema)
@roles_required()
def get_storage(code: str) -> services.Occupancy:
    """Occupancy: position → item (custody `move`/`receive` with `position`
    `<code>:<n>` place an item; moving it out frees the position)."""
    return services.occupancy(db_session(), code)
