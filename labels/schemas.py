"""Schemas of the labels API."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from gmp_mes.schemas import StrictSchema
from labels.models import LabelFormat
from labels.services import MAX_COPIES


class _PrintOptions(StrictSchema):
    reprint = fields.Boolean(load_default=False)
    reason = fields.String(load_default=None, validate=validate.Length(max=2000))
    workstation = fields.String(load_default=None, validate=validate.Length(max=100))


class LabelQuerySchema(_PrintOptions):
    format = fields.String(
        load_default="png", validate=validate.OneOf([f.value for f in LabelFormat])
    )
    copies = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_COPIES))
    dpi = fields.Integer(load_default=203, validate=validate.OneOf([203, 300]))
    preview = fields.Boolean(load_default=False, metadata={
        "description": "a marked preview: records no print, its code never verifies"})


class PrintToSchema(_PrintOptions):
    """POST /items/{item_id}/label/print: ZPL sent to a printer of the user's site."""

    printer = fields.String(required=True, validate=validate.Length(min=1, max=60))
    copies = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_COPIES))


class StockSchema(StrictSchema):
    stock = fields.String(required=True, validate=validate.OneOf(["2x1", "3x2", "4x2"]))


class PrinterInSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=60))
    host = fields.String(required=True, validate=validate.Length(min=1, max=255))
    port = fields.Integer(load_default=9100, validate=validate.Range(min=1, max=65535))
    dpi = fields.Integer(load_default=203, validate=validate.OneOf([203, 300]))


class PrinterSchema(Schema):
    name = fields.String()
    site_code = fields.String()
    host = fields.String()
    port = fields.Integer()
    dpi = fields.Integer()


class LabelSetupSchema(Schema):
    stocks = fields.Dict(keys=fields.String(), values=fields.String())
    printers = fields.List(fields.Nested(PrinterSchema))


class PrintedSchema(Schema):
    label_ids = fields.List(fields.String())
    printer = fields.String()


class SheetQuerySchema(_PrintOptions):
    items = fields.String(required=True, validate=validate.Length(min=1, max=5000))
    paper = fields.String(load_default="a4", validate=validate.OneOf(["a4", "letter"]))


class VoidSchema(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class ReplaceSchema(StrictSchema):
    """POST /items/{item_id}/labels/{label_id}/replace."""

    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    format = fields.String(
        load_default="pdf", validate=validate.OneOf([f.value for f in LabelFormat])
    )
    workstation = fields.String(load_default=None, validate=validate.Length(max=100))
    dpi = fields.Integer(load_default=203, validate=validate.OneOf([203, 300]))


class LabelSchema(Schema):
    """A printed copy of an item's label (for GET /items/{id} and the void response)."""

    label_id = fields.String()
    item_id = fields.String()
    serial = fields.String(
        allow_none=True, metadata={"description": "the copy's serial in its payload; "
                                   "null for a 6-field label printed before serials"}
    )
    format = fields.String()
    copies = fields.Integer()
    workstation = fields.String(allow_none=True)
    reprint = fields.Boolean()
    reason = fields.String(allow_none=True)
    status_banner = fields.String(allow_none=True)
    key_id = fields.String()
    printed_by = fields.String()
    printed_at = fields.DateTime()
    voided = fields.Boolean()
    void_reason = fields.String(allow_none=True)
    voided_by = fields.String(allow_none=True)
    voided_at = fields.DateTime(allow_none=True)
    replaces = fields.String(allow_none=True, metadata={"description": "the copy it replaced"})
    replaced_by = fields.String(allow_none=True, metadata={"description": "its replacement"})


class AssetLabelSchema(Schema):
    """One printed copy of a material lot or equipment label (``AssetLabelRecord``)."""

    label_id = fields.String()
    kind_code = fields.String(metadata={"enum": ["LOT", "EQP"]})
    subject_id = fields.String()
    serial = fields.Integer()
    format = fields.String()
    workstation = fields.String(allow_none=True)
    reprint = fields.Boolean()
    reason = fields.String(allow_none=True)
    key_id = fields.String()
    printed_by = fields.String()
    printed_at = fields.DateTime()
