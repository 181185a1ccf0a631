"""Marshmallow schemas of the equipment API (SPEC §11): strict input, declared output
(they dump the services' ``EquipmentView``, ``EquipmentEvent``, ``EquipmentUse``)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from equipment.models import EquipmentStatus, EventKind
from gmp_mes.schemas import EdgeSchema, SignatureOutSchema, SignatureSchema, StrictSchema, Text
from labels.http import AssetLabelSchema

STATUSES = [status.value for status in EquipmentStatus]
KINDS = [kind.value for kind in EventKind]


class EquipmentInSchema(StrictSchema):
    equipment_id = fields.String(required=True, validate=validate.Length(min=1, max=40),
                                 metadata={"description": "upper case letters, digits, '.' "
                                           "and '-' (it is carried by the EQP label)"})
    type = fields.String(required=True, validate=validate.Length(min=1, max=48), metadata={
        "description": "as process definitions name it ([[steps.equipment]] type), e.g. "
                       "biosafety_cabinet"})
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    site = fields.String(required=True, validate=validate.Length(min=1, max=32),
                         metadata={"description": "the site code"})
    calibration_interval = fields.String(load_default=None, allow_none=True,
                                         validate=validate.Length(max=40), metadata={
                                             "description": "ISO 8601 duration (P365D); "
                                                            "omit: no calibration schedule"})
    cleaning_required = fields.Boolean(load_default=False, metadata={
        "description": "another batch may use it only after a cleaning (21 CFR 211.67)"})


class EventInSchema(StrictSchema):
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    signature = fields.Nested(SignatureSchema, required=True)
    reason = Text(load_default=None, allow_none=True, multiline=True,
                  validate=validate.Length(max=2000),
                  metadata={"description": "required for out_of_service"})
    valid_until = fields.AwareDateTime(load_default=None, allow_none=True,
                                       default_timezone=None, metadata={
                                           "description": "calibrated only: until when the "
                                           "calibration is valid (default: now plus the "
                                           "calibration interval)"})


class EquipmentQuerySchema(EdgeSchema):
    """GET /equipment/{id}: the logbook comes in pages, newest first (it grows)."""

    events_limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    events_before = fields.Integer(load_default=None, validate=validate.Range(min=1, max=2**62))
    uses_limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    uses_before = fields.Integer(load_default=None, validate=validate.Range(min=1, max=2**62))


class EquipmentListQuerySchema(EdgeSchema):
    site = fields.String(load_default=None, validate=validate.Length(max=32))
    type = fields.String(load_default=None, validate=validate.Length(max=48))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=2**31))


class EventSchema(Schema):
    id = fields.Integer()
    equipment_id = fields.String()
    kind = fields.String(metadata={"enum": KINDS})
    reason = fields.String(allow_none=True)
    valid_until = fields.DateTime(allow_none=True)
    recorded_at = fields.DateTime()
    recorded_by = fields.Function(lambda event: event.recorder.username)
    signature = fields.Nested(SignatureOutSchema)


class UseSchema(Schema):
    id = fields.Integer()
    equipment_id = fields.String()
    batch_number = fields.String()
    coi_id = fields.String()
    step_record_id = fields.Integer()
    step_code = fields.String()
    used_by = fields.Function(lambda use: use.user.username)
    used_at = fields.DateTime()


class EquipmentReasonSchema(Schema):
    code = fields.String()
    message = fields.String()


class EquipmentSchema(Schema):
    equipment_id = fields.String()
    type = fields.String()
    name = fields.String()
    site = fields.String(attribute="site_code")
    calibration_interval = fields.String(allow_none=True)
    cleaning_required = fields.Boolean()
    created_at = fields.DateTime()
    created_by = fields.String()
    status = fields.String(metadata={"enum": STATUSES})
    calibration_valid_until = fields.DateTime(allow_none=True)
    calibrated_at = fields.DateTime(allow_none=True)
    calibration_overdue = fields.Boolean()
    out_of_service_reason = fields.String(allow_none=True)
    last_cleaned_at = fields.DateTime(allow_none=True)
    last_maintained_at = fields.DateTime(allow_none=True)
    used_since_cleaning_by = fields.String(allow_none=True, metadata={
        "description": "cleaning-required equipment: the batch that used it since its last "
                       "cleaning (another batch must wait for a cleaning)"})
    reasons = fields.List(fields.Nested(EquipmentReasonSchema), metadata={
        "description": "why it may not be used now (empty: fit for use)"})


class EquipmentDetailSchema(EquipmentSchema):
    events = fields.List(fields.Nested(EventSchema), metadata={
        "description": "the logbook, newest first (events_limit)"})
    events_older = fields.Integer(allow_none=True, metadata={
        "description": "pass as events_before for older events; null: none"})
    uses = fields.List(fields.Nested(UseSchema), metadata={
        "description": "the use log, newest first (uses_limit)"})
    uses_older = fields.Integer(allow_none=True, metadata={
        "description": "pass as uses_before for older uses; null: none"})
    labels = fields.List(fields.Nested(AssetLabelSchema), metadata={
        "description": "every printed copy of its EQP label, newest first"})
