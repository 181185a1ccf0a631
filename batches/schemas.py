"""Schemas of the batches API: strict input, declared output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import Schema, fields, post_load, validate

from batches.models import DeviationSeverity, StepRecord
from batches.services import VerifierInput
from gmp_mes.audit import format_time
from gmp_mes.models import Meaning
from gmp_mes.registry import LotGiven, StepResources
from gmp_mes.schemas import EdgeSchema, SignatureOutSchema, SignatureSchema, StrictSchema, Text
from processes.definitions import MAX_BAGS
from processes.services import DEFAULT_PROCESS

SEVERITIES = [s.value for s in DeviationSeverity]


class VerifierSchema(StrictSchema):
    """The second person on a critical step signs with user name and password."""

    username = fields.String(required=True, validate=validate.Length(min=1, max=64))
    password = fields.String(required=True, validate=validate.Length(min=1, max=200))
    meaning = fields.String(load_default=Meaning.VERIFIED.value,
                            validate=validate.OneOf([Meaning.VERIFIED.value]))
    reason = fields.String(load_default=None, validate=validate.Length(max=2000))

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> VerifierInput:
        return VerifierInput(**data)


class BatchInSchema(StrictSchema):
    item_id = fields.String(
        required=True, validate=validate.Length(min=1, max=300),
        metadata={"description": "the starting material's item id, or its scanned label "
                                 "payload (GMP1:SM:...; the signature is verified)"})
    process_code = fields.String(load_default=DEFAULT_PROCESS,
                                 validate=validate.Length(min=1, max=32))
    process_version = fields.Integer(load_default=None, strict=True,
                                     validate=validate.Range(min=1))


class BatchQuerySchema(EdgeSchema):
    status = fields.String(load_default=None)


class BatchRecordQuerySchema(StrictSchema):
    """GET /batches/{batch_number}: the step history comes in pages (issue 15: a batch
    with 1,000 step records must not answer with megabytes); the exports are complete."""

    steps_limit = fields.Integer(load_default=500, validate=validate.Range(min=1, max=5000),
                                 metadata={"description": "step records per page, newest"})
    steps_before = fields.Integer(load_default=None, validate=validate.Range(min=1, max=2**62),
                                  metadata={"description": "the steps_older cursor of the "
                                                           "page before"})


class StepBodySchema(StrictSchema):
    values = fields.Dict(keys=fields.String(), load_default=dict)
    signature = fields.Nested(SignatureSchema, required=True)
    verifier = fields.Nested(VerifierSchema, load_default=None)


# A step uses a handful of lots and pieces of equipment; more is a malformed body.
MAX_RESOURCES = 50


class LotGivenSchema(StrictSchema):
    lot_id = fields.String(
        required=True, validate=validate.Length(min=1, max=2000),
        metadata={"description": "the lot's id (LOT-...) or its scanned label payload"})
    quantity = fields.Float(
        load_default=None, allow_none=True,
        validate=validate.Range(min=0, min_inclusive=False, max=1e9),
        metadata={"description": "used, in the material's unit (default: the quantity "
                                 "the step declares)"})


class StepResourcesSchema(StrictSchema):
    """What touches the cells (SPEC §11) and where (§12), given with a step body."""

    materials = fields.List(
        fields.Nested(LotGivenSchema), load_default=list,
        validate=validate.Length(max=MAX_RESOURCES),
        metadata={"description": "the lots used: checked (released, in date, of a "
                                 "material the step declares, enough left) and consumed"})
    equipment = fields.List(
        fields.String(validate=validate.Length(min=1, max=2000)), load_default=list,
        validate=validate.Length(max=MAX_RESOURCES),
        metadata={"description": "equipment ids or scanned EQP label payloads: checked "
                                 "(type, in service, calibrated, cleaned) and logged"})
    room = fields.String(load_default=None, allow_none=True,
                         validate=validate.Length(min=1, max=64),
                         metadata={"description": "the room of a step that declares "
                                                  "room_grade (§12)"})

    @post_load
    def resources(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["resources"] = StepResources(
            materials=tuple(LotGiven(m["lot_id"], m["quantity"]) for m in data.pop("materials")),
            equipment=tuple(data.pop("equipment")),
            room=data.pop("room"),
        )
        return data


class StepInSchema(StepBodySchema, StepResourcesSchema):
    scan = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1, max=2000),
        metadata={"description": "a label scanned as the step's identity check (the bag at "
                                 "receipt): checked against the batch and recorded with the "
                                 "step; 409 coi_mismatch (or the scan's reason) otherwise"})
    scans = fields.List(
        fields.String(validate=validate.Length(min=1, max=2000)), load_default=None,
        allow_none=True, validate=validate.Length(max=MAX_BAGS),
        metadata={"description": "a label-check step (scans = \"final_product\"): the "
                                 "scanned label of every bag the batch's fill created, each "
                                 "checked like scan; 409 bags_not_scanned until all are in"})


class CheckVerifierSchema(StrictSchema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=64))
    password = fields.String(load_default=None, validate=validate.Length(max=200),
                             metadata={"description": "ignored: a dry run checks no "
                                                      "password"})


class StepCheckInSchema(StepResourcesSchema):
    """POST .../check: the step body without a signature (SPEC §11); ``values``,
    ``scan``, ``scans`` and ``signature`` may be sent as they will be, and are not
    checked or recorded (nobody signs a dry run)."""

    values = fields.Dict(keys=fields.String(), load_default=dict)
    scan = fields.String(load_default=None, allow_none=True)
    scans = fields.List(fields.String(), load_default=None, allow_none=True)
    signature = fields.Dict(load_default=None, allow_none=True)
    verifier = fields.Nested(CheckVerifierSchema, load_default=None, allow_none=True)


class StepCheckSchema(Schema):
    ok = fields.Boolean()
    reasons = fields.List(fields.Dict(keys=fields.String(), values=fields.String()))


class CorrectionInSchema(StepBodySchema):
    """A correction restates the values; the identity scan stays with the original."""

    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    occurrence = fields.Integer(load_default=None, strict=True, validate=validate.Range(min=1))


class DeviationInSchema(StrictSchema):
    severity = fields.String(required=True, validate=validate.OneOf(SEVERITIES))
    description = Text(required=True, multiline=True, validate=validate.Length(min=1, max=4000))
    step_code = fields.String(load_default=None, validate=validate.Length(min=1, max=40))


class AssessInSchema(StrictSchema):
    assessment = Text(required=True, multiline=True, validate=validate.Length(min=1, max=4000))
    severity = fields.String(load_default=None, validate=validate.OneOf(SEVERITIES))
    signature = fields.Nested(SignatureSchema, required=True)


class CloseInSchema(StrictSchema):
    closure = fields.String(required=True, validate=validate.Length(min=1, max=4000))
    signature = fields.Nested(SignatureSchema, required=True)


# --- output ------------------------------------------------------------------------------

class StepRecordSchema(Schema):
    id = fields.Integer()
    key = fields.String()
    step_code = fields.String()
    occurrence = fields.Integer()
    version = fields.Integer()
    values = fields.Dict()
    results = fields.List(fields.Dict())
    in_limits = fields.Boolean()
    performed_at = fields.DateTime()
    correction_reason = fields.String(allow_none=True)
    supersedes_id = fields.Integer(allow_none=True)
    items = fields.Function(lambda r: r.item_ids)
    scan = fields.Dict(allow_none=True, metadata={
        "description": "the identity scan recorded with the step (item_id, kind, coi_id, "
                       "status, custody_event_id)"})
    scans = fields.List(fields.Dict(), allow_none=True, metadata={
        "description": "the label scans of a label-check step, one per bag (same fields "
                       "as scan)"})
    used = fields.Dict(allow_none=True, data_key="resources", metadata={
        "description": "what the step used, per need checked (materials: lots and "
                       "quantities; equipment), as signed with the step"})
    signature = fields.Nested(SignatureOutSchema)
    verifier_signature = fields.Nested(SignatureOutSchema, allow_none=True)


class DeviationSchema(Schema):
    id = fields.Integer()
    number = fields.String()
    batch_number = fields.String()
    kind = fields.String()
    severity = fields.String()
    status = fields.String()
    description = fields.String()
    step_code = fields.String(allow_none=True)
    parameter = fields.String(allow_none=True)
    opened_at = fields.DateTime()
    assessment = fields.String(allow_none=True)
    assessed_at = fields.DateTime(allow_none=True)
    assessment_signature = fields.Nested(SignatureOutSchema, allow_none=True)
    closure = fields.String(allow_none=True)
    closed_at = fields.DateTime(allow_none=True)
    closure_signature = fields.Nested(SignatureOutSchema, allow_none=True)


class StepOutcomeSchema(Schema):
    record = fields.Nested(StepRecordSchema)
    deviations = fields.List(fields.Nested(DeviationSchema))
    items = fields.List(fields.Dict(), metadata={"description": "final-product items created"})
    batch_status = fields.String()


class BatchSummarySchema(Schema):
    batch_number = fields.String()
    coi_id = fields.String()
    status = fields.String()
    process_code = fields.String()
    process_version = fields.Integer()
    starting_item_id = fields.String()
    site_code = fields.String()
    started_at = fields.DateTime()
    completed_at = fields.DateTime(allow_none=True)


class BatchSchema(Schema):
    """The batch as the executed record shows it (see batches.record)."""

    batch_number = fields.String()
    coi_id = fields.String()
    status = fields.String()
    status_reason = fields.String(allow_none=True)
    process_code = fields.String()
    process_version = fields.Integer()
    product = fields.String()
    starting_item_id = fields.String()
    site_code = fields.String()
    started_at = fields.String()
    completed_at = fields.String(allow_none=True)
    next_steps = fields.List(fields.String())
    steps = fields.List(fields.Dict(), metadata={
        "description": "every step; records and superseded hold one page of the step "
                       "history (the newest steps_limit records)"})
    steps_older = fields.Integer(allow_none=True, metadata={
        "description": "pass as steps_before for the page of older records; null: none"})
    items = fields.List(fields.Dict())
    deviations = fields.List(fields.Dict())
    qc = fields.Raw(allow_none=True)
    qc_specs = fields.List(fields.Dict())
    release = fields.Raw(allow_none=True)
    release_blockers = fields.List(fields.Dict())
    materials = fields.Raw(allow_none=True, metadata={
        "description": "every material lot the batch used (backward traceability, SPEC §11)"})
    equipment = fields.Raw(allow_none=True, metadata={
        "description": "every piece of equipment the batch's steps used (SPEC §11)"})


# --- the executed batch record (batches.record, the page, record.json and record.pdf) ----
# The record writes its times as the audit trail does (UTC, microseconds, "Z"); the same
# schemas as the API otherwise, so one signature schema shapes every signature.

class RecordTime(fields.DateTime):
    """A stored time as the executed record writes it (``gmp_mes.audit.format_time``)."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else format_time(value)


class RecordSignatureSchema(SignatureOutSchema):
    signed_at = RecordTime()


class RecordStepSchema(StepRecordSchema):
    """A step record with ``signature_binds``: whether the stored record is still what
    its signatures signed (21 CFR 11.70), answered by ``binds`` (None: not checked)."""

    signature_binds = fields.Method("_binds")
    performed_at = RecordTime()
    signature = fields.Nested(RecordSignatureSchema, allow_none=True)
    verifier_signature = fields.Nested(RecordSignatureSchema, allow_none=True)

    class Meta:
        fields = ("signature_binds", "id", "key", "step_code", "occurrence", "version",
                  "values", "results", "in_limits", "performed_at", "correction_reason",
                  "supersedes_id", "items", "scan", "scans", "used", "signature",
                  "verifier_signature")

    def __init__(self, binds: Callable[[StepRecord], bool | None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.binds = binds

    def _binds(self, record: StepRecord) -> bool | None:
        return None if self.binds is None else self.binds(record)


class RecordDeviationSchema(DeviationSchema):
    opened_at = RecordTime()
    assessed_at = RecordTime()
    assessment_signature = fields.Nested(RecordSignatureSchema, allow_none=True)
    closed_at = RecordTime()
    closure_signature = fields.Nested(RecordSignatureSchema, allow_none=True)
    blocks_release = fields.Boolean()


class RecordItemSchema(Schema):
    """An item of the batch's genealogy (and the bags a fill created)."""

    item_id = fields.String()
    kind = fields.String()
    status = fields.String()
    coi_id = fields.String()
    batch_number = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    expires_at = RecordTime()
    location = fields.String(allow_none=True)
    site_code = fields.String(allow_none=True)
