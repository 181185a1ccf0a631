"""Marshmallow schemas of the rooms API (SPEC §12): strict input, declared output (they dump
the services' ``RoomView``, ``RoomUse``, ``LineClearance``, ``EmResult``)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from gmp_mes.schemas import EdgeSchema, SignatureOutSchema, SignatureSchema, StrictSchema, Text
from rooms.models import ClearanceStatus, Grade, SampleType

GRADES = [grade.value for grade in Grade]
SAMPLE_TYPES = [t.value for t in SampleType]
CLEARANCE_STATUSES = [s.value for s in ClearanceStatus]


class RoomInSchema(StrictSchema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=40), metadata={
        "description": "upper case letters, digits, '.' and '-' (as on the door)"})
    site = fields.String(required=True, validate=validate.Length(min=1, max=32),
                         metadata={"description": "the site code"})
    grade = fields.String(required=True, validate=validate.OneOf(GRADES), metadata={
        "description": "EU GMP Annex 1 cleanroom grade, A cleanest"})
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))


class RoomSignedSchema(StrictSchema):
    signature = fields.Nested(SignatureSchema, required=True)


class EmResultInSchema(StrictSchema):
    sample_type = fields.String(required=True, validate=validate.OneOf(SAMPLE_TYPES),
                                metadata={"description": "air_active cfu/m³, settle_plate "
                                          "cfu/4 h, contact_plate cfu/plate, glove_print "
                                          "cfu/glove"})
    value = fields.Integer(required=True, strict=True,
                           validate=validate.Range(min=0, max=1_000_000),
                           metadata={"description": "colony-forming units counted"})
    sampled_at = fields.AwareDateTime(required=True, default_timezone=None, metadata={
        "description": "when the sample was taken (not in the future)"})
    location = Text(load_default=None, allow_none=True, validate=validate.Length(max=200),
                    metadata={"description": "where in the room (e.g. 'BSC-01 left')"})
    signature = fields.Nested(SignatureSchema, required=True)


class EmAlertLimitInSchema(StrictSchema):
    site = fields.String(required=True, validate=validate.Length(min=1, max=32))
    grade = fields.String(required=True, validate=validate.OneOf(GRADES))
    sample_type = fields.String(required=True, validate=validate.OneOf(SAMPLE_TYPES))
    alert_limit = fields.Integer(required=True, strict=True,
                                 validate=validate.Range(min=1, max=10_000), metadata={
                                     "description": "cfu; at most the grade's action limit"})


class RoomListQuerySchema(EdgeSchema):
    site = fields.String(load_default=None, validate=validate.Length(max=32))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=2**31))


class RoomQuerySchema(EdgeSchema):
    """GET /rooms/{code}: the trails come in pages, newest first (they grow)."""

    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    uses_before = fields.Integer(load_default=None, validate=validate.Range(min=1, max=2**62))
    clearances_before = fields.Integer(load_default=None,
                                       validate=validate.Range(min=1, max=2**62))
    em_before = fields.Integer(load_default=None, validate=validate.Range(min=1, max=2**62))
    sample_type = fields.String(load_default=None, validate=validate.OneOf(SAMPLE_TYPES))


class EmAlertLimitQuerySchema(EdgeSchema):
    site = fields.String(load_default=None, validate=validate.Length(max=32))


class RoomUseSchema(Schema):
    id = fields.Integer()
    room = fields.String(attribute="room_code")
    batch_number = fields.String()
    coi_id = fields.String()
    step_record_id = fields.Integer()
    step_code = fields.String()
    line_clearance = fields.Integer(attribute="clearance_id", allow_none=True)
    used_by = fields.Function(lambda use: use.user.username)
    at = fields.DateTime()


class LineClearanceSchema(Schema):
    id = fields.Integer()
    room = fields.String(attribute="room_code")
    status = fields.String(metadata={"enum": CLEARANCE_STATUSES})
    cleared_batch = fields.Function(
        lambda c: c.after_use.batch_number if c.after_use else None,
        metadata={"description": "the batch of the room's last use it clears (null: the "
                                 "room was never used)"})
    cleared_coi = fields.Function(lambda c: c.after_use.coi_id if c.after_use else None)
    performed_by = fields.Function(lambda c: c.performer.username)
    performed_at = fields.DateTime()
    performed_signature = fields.Nested(SignatureOutSchema)
    verified_by = fields.Function(lambda c: c.verifier.username if c.verifier else None)
    verified_at = fields.DateTime(allow_none=True)
    verified_signature = fields.Nested(SignatureOutSchema, allow_none=True)


class EmResultSchema(Schema):
    id = fields.Integer()
    room = fields.String(attribute="room_code")
    grade = fields.String()
    sample_type = fields.String(metadata={"enum": SAMPLE_TYPES})
    value = fields.Integer()
    unit = fields.Method("_unit")
    sampled_at = fields.DateTime()
    location = fields.String(allow_none=True)
    action_limit = fields.Integer(allow_none=True, metadata={
        "description": "EU GMP Annex 1 Table 6 for the grade (null: Annex 1 sets none)"})
    alert_limit = fields.Integer(allow_none=True, metadata={
        "description": "the site's alert limit in force (null: none set)"})
    passed = fields.Boolean()
    alert_level = fields.Boolean(metadata={
        "description": "passed, at or above the alert limit: a warning"})
    recorded_by = fields.Function(lambda r: r.recorder.username)
    recorded_at = fields.DateTime()
    signature = fields.Nested(SignatureOutSchema)

    def _unit(self, result: Any) -> str:
        from rooms.services import unit_of

        return unit_of(result.sample_type)


class EmOutcomeSchema(EmResultSchema):
    warning = fields.String(allow_none=True)
    deviations = fields.List(fields.String(), metadata={
        "description": "the deviations the excursion opened, one per affected batch"})
    released_batches = fields.List(fields.String(), metadata={
        "description": "affected batches already released (QA alerted)"})


class EmAlertLimitSchema(Schema):
    site = fields.String(attribute="site_code")
    grade = fields.String()
    sample_type = fields.String()
    alert_limit = fields.Integer()
    set_at = fields.DateTime()


class RoomSchema(Schema):
    code = fields.String()
    site = fields.String(attribute="site_code")
    grade = fields.String(metadata={"enum": GRADES})
    name = fields.String()
    created_at = fields.DateTime()
    created_by = fields.String()
    last_coi = fields.String(allow_none=True, metadata={
        "description": "the COI the room last served (its last step)"})
    last_batch = fields.String(allow_none=True)
    cleared = fields.Boolean(metadata={
        "description": "a verified line clearance follows the last use: another COI may "
                       "enter"})


class RoomDetailSchema(RoomSchema):
    uses = fields.List(fields.Nested(RoomUseSchema), metadata={
        "description": "the occupancy log, newest first (limit)"})
    uses_older = fields.Integer(allow_none=True)
    clearances = fields.List(fields.Nested(LineClearanceSchema))
    clearances_older = fields.Integer(allow_none=True)
    em_results = fields.List(fields.Nested(EmResultSchema))
    em_older = fields.Integer(allow_none=True)
