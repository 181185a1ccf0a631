"""Marshmallow schemas of the logistics API (SPEC §14): strict input, declared output."""

from __future__ import annotations

import json
from typing import Any

from marshmallow import Schema, fields, validate

from gmp_mes import paging
from gmp_mes.schemas import (
    EdgeSchema,
    ScannedText,
    SignatureOutSchema,
    SignatureSchema,
    StrictSchema,
    Text,
)


class ConditionSchema(StrictSchema):
    min_c = fields.Float(required=True, allow_nan=False,
                         metadata={"description": "lowest allowed temperature, °C"})
    max_c = fields.Float(required=True, allow_nan=False,
                         metadata={"description": "highest allowed temperature, °C"})


class ShipmentInSchema(StrictSchema):
    items = fields.List(ScannedText(validate=validate.Length(min=1, max=1000)), required=True,
                        validate=validate.Length(min=1, max=200),
                        metadata={"description": "item ids or scanned label payloads"})
    from_site = fields.String(required=True, validate=validate.Length(min=1, max=32))
    to_site = fields.String(required=True, validate=validate.Length(min=1, max=32))
    condition = fields.Nested(ConditionSchema, required=True)
    shipper_id = fields.String(load_default=None, validate=validate.Length(max=60),
                               metadata={"description": "the shipper (dry shipper, dewar)"})
    logger_id = fields.String(load_default=None, validate=validate.Length(max=60),
                              metadata={"description": "the temperature data logger; a "
                                        "shipment with one that arrives without its log is "
                                        "held (temperature_unknown)"})
    courier = fields.String(load_default=None, validate=validate.Length(max=100))


class ExcursionSchema(Schema):
    start = fields.String()
    end = fields.String()
    minutes = fields.Float()
    extreme_c = fields.Float()


class GapSchema(Schema):
    start = fields.String()
    end = fields.String()
    minutes = fields.Float()


class LogSummarySchema(Schema):
    """A stored temperature log's summary (``services.LogSummary``)."""

    readings = fields.Integer()
    min_c = fields.Float(attribute="log.min_c")
    max_c = fields.Float(attribute="log.max_c")
    first_at = fields.DateTime(attribute="log.first_at")
    last_at = fields.DateTime(attribute="log.last_at")
    interval_s = fields.Float(attribute="log.interval_s", allow_none=True, metadata={
        "description": "the median sampling interval, seconds"})
    gap_after_s = fields.Float(attribute="log.gap_after_s", allow_none=True, metadata={
        "description": "an interval between readings longer than this (3x the median "
                       "interval) is a gap"})
    excursions = fields.List(fields.Nested(ExcursionSchema))
    gaps = fields.List(fields.Nested(GapSchema))
    source = fields.String(attribute="log.source")
    sha256 = fields.String(attribute="log.file_sha256")
    uploaded_at = fields.DateTime(attribute="log.uploaded_at")


class ShipmentItemSchema(Schema):
    item_id = fields.String()
    received_at = fields.DateTime(allow_none=True)


class ReceiptSchema(Schema):
    id = fields.Integer()
    site = fields.String(attribute="site_code")
    received_at = fields.DateTime()
    received = fields.Function(lambda r: json.loads(r.received))
    missing = fields.Function(lambda r: json.loads(r.missing))
    unexpected = fields.Function(lambda r: json.loads(r.unexpected))
    hold = fields.String(allow_none=True)


def _condition(shipment: Any) -> dict[str, Any]:
    """A ``Shipment`` (the list) or the detail's mapping (``api.shipment_detail``)."""
    get = shipment.get if isinstance(shipment, dict) else shipment.__getattribute__
    return {"min_c": get("min_c"), "max_c": get("max_c")}


class ShipmentSchema(Schema):
    shipment_id = fields.String()
    from_site = fields.String()
    to_site = fields.String()
    condition = fields.Function(_condition)
    shipper_id = fields.String(allow_none=True)
    logger_id = fields.String(allow_none=True)
    courier = fields.String(allow_none=True)
    status = fields.String()
    shipped_at = fields.DateTime()
    received_at = fields.DateTime(allow_none=True)
    hold = fields.String(allow_none=True, metadata={
        "description": "temperature_excursion or temperature_unknown: the items are held "
                       "until QA's disposition"})
    holding = fields.Boolean()
    decision = fields.String(allow_none=True)
    justification = fields.String(allow_none=True)
    decided_at = fields.DateTime(allow_none=True)


class ShipmentDetailSchema(ShipmentSchema):
    items = fields.List(fields.Nested(ShipmentItemSchema))
    temperature_log = fields.Nested(LogSummarySchema, allow_none=True)
    receipts = fields.List(fields.Nested(ReceiptSchema))
    signature = fields.Nested(SignatureOutSchema, allow_none=True,
                              attribute="decision_signature")


class ShipmentListSchema(Schema):
    shipments = fields.List(fields.Nested(ShipmentSchema))
    page = fields.Integer()
    size = fields.Integer()
    more = fields.Boolean()


class ReadingInSchema(StrictSchema):
    at = fields.String(required=True)
    c = fields.Float(required=True)


class ReadingsInSchema(StrictSchema):
    """The JSON form of a temperature log (documentation; the service checks each reading
    itself: a 43,200-reading log is not run through a nested schema)."""

    readings = fields.List(fields.Nested(ReadingInSchema), required=True)


class ReceiveInSchema(StrictSchema):
    site = fields.String(required=True, validate=validate.Length(min=1, max=32))
    payloads = fields.List(ScannedText(validate=validate.Length(min=1, max=1000)),
                           required=True, validate=validate.Length(min=1, max=200),
                           metadata={"description": "the scanned label of every bag received"})
    location = fields.String(load_default=None, validate=validate.Length(max=100))


class UnexpectedSchema(Schema):
    payload = fields.String()
    item_id = fields.String(allow_none=True)
    code = fields.String()
    message = fields.String()


class ReconciliationSchema(Schema):
    missing = fields.List(fields.String())
    unexpected = fields.List(fields.Nested(UnexpectedSchema))


class ReceiptOutSchema(Schema):
    shipment_id = fields.String(attribute="shipment.shipment_id")
    status = fields.String(attribute="shipment.status")
    received = fields.List(fields.String())
    reconciliation = fields.Function(lambda o: {"missing": o.missing,
                                                "unexpected": o.unexpected})
    hold = fields.String(allow_none=True)
    receipt_id = fields.Integer(attribute="receipt.id")


class DispositionInSchema(StrictSchema):
    decision = fields.String(required=True, validate=validate.OneOf(["accept", "reject"]))
    justification = Text(load_default=None, multiline=True,
                         validate=validate.Length(max=4000))
    signature = fields.Nested(SignatureSchema, required=True)


class ShipmentQuerySchema(EdgeSchema):
    site = fields.String(load_default=None, validate=validate.Length(max=32))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    size = fields.Integer(load_default=paging.PAGE_SIZE,
                          validate=validate.Range(min=1, max=paging.MAX_PAGE_SIZE))


class StorageInSchema(StrictSchema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=80), metadata={
        "description": "SITE/FREEZER/RACK/BOX, e.g. CLEAN1/LN2-1/R3/B2"})
    positions = fields.Integer(required=True, validate=validate.Range(min=1, max=1000))
    condition = fields.Nested(ConditionSchema, required=True)


class PlacementSchema(Schema):
    position = fields.Integer()
    item_id = fields.String()
    placed_at = fields.DateTime()


class StorageSchema(Schema):
    """``services.Occupancy``: the unit and what is in its positions now."""

    code = fields.String(attribute="unit.code")
    site = fields.String(attribute="unit.site_code")
    positions = fields.Integer(attribute="unit.positions")
    condition = fields.Function(lambda o: {"min_c": o.unit.min_c, "max_c": o.unit.max_c})
    free = fields.Integer()
    occupancy = fields.Function(
        lambda o: {str(n): p.item_id for n, p in sorted(o.placed.items())},
        metadata={"description": "position -> the item in it (free positions left out)"})
    placements = fields.Function(lambda o: PlacementSchema(many=True).dump(
        [o.placed[n] for n in sorted(o.placed)]))
