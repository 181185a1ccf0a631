"""Marshmallow schemas of the materials API (SPEC §11): strict input, declared output.

Quantities are exact decimals: the API takes a JSON number or a decimal string
(``0.1``, ``"0.1"``) and answers strings (``"0.1"``, ``"250"``), so no float ever
rounds what a lot holds."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

import labels.http
from gmp_mes.schemas import FormNumber, SignatureOutSchema, SignatureSchema, StrictSchema, Text
from materials.models import MaterialKind
from materials.services import QuantityInvalid, exact, show

KINDS = [kind.value for kind in MaterialKind]


class QuantityField(fields.Field):
    """An exact, positive quantity with at most 6 decimals: a JSON number or a decimal
    string in, a decimal string out."""

    default_error_messages = {"invalid": "must be a number"}

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else show(Decimal(value))

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.make_error("invalid")
        try:
            return exact(value.strip() if isinstance(value, str) else value)
        except QuantityInvalid as exc:
            raise ValidationError(str(exc)) from None


class MaterialInSchema(StrictSchema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=32),
                         metadata={"description": "the code process steps name "
                                   "(`[[steps.materials]] material`), e.g. IL2"})
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    unit = fields.String(required=True, validate=validate.Length(min=1, max=20))
    storage = fields.String(load_default=None, validate=validate.Length(max=500))


class MaterialSchema(Schema):
    code = fields.String()
    name = fields.String()
    kind = fields.String()
    unit = fields.String()
    storage = fields.String(allow_none=True)
    created_at = fields.DateTime()


class LotInSchema(StrictSchema):
    supplier = fields.String(required=True, validate=validate.Length(min=1, max=200))
    supplier_lot = fields.String(required=True, validate=validate.Length(min=1, max=100))
    expires_at = fields.AwareDateTime(required=True, default_timezone=None)
    quantity = QuantityField(required=True, metadata={
        "description": "received, in the material's unit (exact decimal, at most 6 "
                       "decimals)", "type": "number"})
    coa_reference = fields.String(load_default=None, validate=validate.Length(max=200))


class LotSchema(Schema):
    lot_id = fields.String()
    material = fields.String(attribute="material_code")
    material_name = fields.Function(lambda lot: lot.material.name)
    unit = fields.Function(lambda lot: lot.material.unit)
    supplier = fields.String()
    supplier_lot = fields.String()
    expires_at = fields.DateTime()
    quantity = QuantityField(metadata={"type": "string"})
    remaining = QuantityField(metadata={"type": "string"})
    status = fields.String()
    coa_reference = fields.String(allow_none=True)
    site = fields.String(attribute="site_code", allow_none=True)
    received_at = fields.DateTime()
    decided_at = fields.DateTime(allow_none=True)
    reject_reason = fields.String(allow_none=True)


class LotUseSchema(Schema):
    batch_number = fields.Function(lambda v: v.use.batch_number)
    coi_id = fields.Function(lambda v: v.use.coi_id)
    step_code = fields.Function(lambda v: v.use.step_code)
    step_record_id = fields.Function(lambda v: v.use.step_record_id)
    quantity = fields.Function(lambda v: show(v.use.quantity))
    used_by = fields.String(attribute="username")
    used_at = fields.Function(lambda v: v.use.used_at.isoformat())


class LotDetailSchema(Schema):
    """``LotView``: the lot's fields (as ``LotSchema``), who received and decided it, the
    decision's signature and every use."""

    lot_id = fields.String(attribute="lot.lot_id")
    material = fields.String(attribute="lot.material_code")
    material_name = fields.Function(lambda v: v.lot.material.name)
    unit = fields.Function(lambda v: v.lot.material.unit)
    supplier = fields.String(attribute="lot.supplier")
    supplier_lot = fields.String(attribute="lot.supplier_lot")
    expires_at = fields.DateTime(attribute="lot.expires_at")
    quantity = QuantityField(attribute="lot.quantity", metadata={"type": "string"})
    remaining = QuantityField(attribute="lot.remaining", metadata={"type": "string"})
    status = fields.String(attribute="lot.status")
    coa_reference = fields.String(attribute="lot.coa_reference", allow_none=True)
    site = fields.String(attribute="lot.site_code", allow_none=True)
    received_at = fields.DateTime(attribute="lot.received_at")
    decided_at = fields.DateTime(attribute="lot.decided_at", allow_none=True)
    reject_reason = fields.String(attribute="lot.reject_reason", allow_none=True)
    received_by = fields.String()
    decided_by = fields.String(allow_none=True)
    signature = fields.Nested(SignatureOutSchema, allow_none=True)
    uses = fields.List(fields.Nested(LotUseSchema))
    labels = fields.List(fields.Nested(labels.http.AssetLabelSchema), metadata={
        "description": "every printed copy of the lot's label, newest first"})


class LotDecisionInSchema(StrictSchema):
    signature = fields.Nested(SignatureSchema, required=True)


class LotRejectInSchema(StrictSchema):
    reason = Text(required=True, multiline=True, validate=validate.Length(min=1, max=4000))
    signature = fields.Nested(SignatureSchema, required=True)


class RecalledItemSchema(Schema):
    item_id = fields.String()
    status = fields.String()
    coi_id = fields.String()
    site = fields.String(attribute="site_code")
    expires_at = fields.DateTime(allow_none=True)
    administered = fields.Boolean()
    administered_at = fields.DateTime(allow_none=True)
    administered_site = fields.String(allow_none=True)


class RecalledBatchSchema(Schema):
    batch_number = fields.String()
    coi_id = fields.String()
    quantity = QuantityField(metadata={"type": "string"})
    uses = fields.Integer()
    first_used_at = fields.DateTime()
    last_used_at = fields.DateTime()
    administered = fields.Boolean()
    items = fields.List(fields.Nested(RecalledItemSchema))


class RecalledPatientSchema(Schema):
    coi_id = fields.Function(lambda p: p[0])
    administered = fields.Function(lambda p: p[1])


class WhereUsedSchema(Schema):
    """The recall answer: batches with an administered bag first, then the others."""

    lot = fields.Nested(LotSchema)
    batches = fields.List(fields.Nested(RecalledBatchSchema))
    patients = fields.List(fields.Nested(RecalledPatientSchema))


class LotFormSchema(LotInSchema):
    """The receive form: the number as the site writes it (``form_number``), the expiry
    as a date (the lot expires at the end of that day, UTC)."""

    quantity = FormNumber(required=True, allow_nan=False,  # type: ignore[assignment]
                          error_messages={"invalid": "enter the quantity, e.g. 10"})
    expires_at = fields.Date(required=True,  # type: ignore[assignment]
                             error_messages={"invalid": "enter a date like 2027-06-30"})

    def __init__(self, *args: Any, decimal_separator: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decimal_separator = decimal_separator
