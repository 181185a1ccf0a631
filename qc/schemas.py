"""Marshmallow schemas of the qc API: strict input, declared output (they dump the
services' typed results: ``TestRow``, ``ResultVersion``, ``DecisionOutcome``,
``QueueEntry``); and the qc sections of the executed batch record."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from marshmallow import Schema, fields, validate

from gmp_mes.models import Signature
from gmp_mes.schemas import SignatureOutSchema, SignatureSchema, StrictSchema

if TYPE_CHECKING:
    from qc.services.overview import TestRow
    from qc.services.reads import ReleaseState



class JsonNumber(fields.Float):
    """A JSON number only: "5" (a string) is refused, not read as 5 (issue 13)."""

    default_error_messages = {"invalid": "must be a number (not a string)",
                              "special": "must be a finite number"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        if isinstance(value, int) and abs(value) > 2**1023:
            raise self.make_error("special")  # float() would overflow
        return super()._deserialize(value, attr, data, **kwargs)


class QcResultInSchema(StrictSchema):
    test = fields.String(required=True, validate=validate.Length(min=1, max=60))
    value = JsonNumber(load_default=None, allow_nan=False, metadata={
        "description": "quantitative tests: a JSON number in the test's unit, physically "
                       "possible (not negative for counts, concentrations and volumes, "
                       "0-100 for %, finite and plausible)"})
    outcome = fields.String(load_default=None, validate=validate.Length(min=1, max=60),
                            metadata={"description": "qualitative tests: one of the test's "
                                      "`outcomes` (its accept value, the opposite, "
                                      "`invalid`), anything else 422"})
    unit = fields.String(load_default=None, validate=validate.Length(max=40))
    method = fields.String(load_default=None, validate=validate.Length(max=200))
    sample_item_id = fields.String(load_default=None, validate=validate.Length(min=1, max=40))
    corrects = fields.Integer(load_default=None, strict=True,
                              validate=validate.Range(min=1, max=2**31 - 1))
    reason = fields.String(load_default=None, validate=validate.Length(max=2000))
    signature = fields.Nested(SignatureSchema, required=True)


class ReviewInSchema(StrictSchema):
    signature = fields.Nested(SignatureSchema, required=True)


class InvalidateInSchema(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    signature = fields.Nested(SignatureSchema, required=True)


class ConditionalSchema(StrictSchema):
    justification = fields.String(required=True, validate=validate.Length(min=1, max=4000))


class ReleaseInSchema(StrictSchema):
    signature = fields.Nested(SignatureSchema, required=True)
    conditional = fields.Nested(ConditionalSchema, load_default=None, allow_none=True)


class RejectInSchema(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=4000))
    signature = fields.Nested(SignatureSchema, required=True)


class QcResultSchema(Schema):
    id = fields.Integer()
    batch_number = fields.String()
    test = fields.String()
    version = fields.Integer()
    supersedes_id = fields.Integer(allow_none=True)
    correction_reason = fields.String(allow_none=True)
    value: fields.Field = fields.Float(allow_none=True)
    outcome = fields.String(allow_none=True)
    unit = fields.String(allow_none=True)
    method = fields.String(allow_none=True)
    specification = fields.String()
    passed = fields.Boolean()
    sample_item_id = fields.String(allow_none=True)
    recorded_at = fields.DateTime()
    current = fields.Boolean()
    superseded = fields.Boolean()
    invalid = fields.Boolean()
    invalid_reason = fields.String(allow_none=True)
    invalidation_signature = fields.Nested(SignatureOutSchema, allow_none=True)
    signature = fields.Nested(SignatureOutSchema)
    review_signature = fields.Nested(SignatureOutSchema, allow_none=True)
    batch_status = fields.String()


class QcTestSchema(Schema):
    test = fields.String()
    method = fields.String(allow_none=True)
    unit = fields.String(allow_none=True)
    specification = fields.String()
    min: fields.Field = fields.Float(allow_none=True)
    max: fields.Field = fields.Float(allow_none=True)
    accept = fields.String(allow_none=True)
    outcomes = fields.List(fields.String(), metadata={
        "description": "qualitative tests: the only outcomes accepted"})
    release_before_result = fields.Boolean()
    time_to_result = fields.String(allow_none=True)
    required = fields.Boolean()
    status = fields.String(metadata={"enum": ["required", "pending", "passed", "failed"]})
    pending = fields.Boolean()
    passed = fields.Boolean()
    failed = fields.Boolean()
    invalid = fields.Integer()
    due_at = fields.DateTime(allow_none=True)
    overdue = fields.Boolean()
    current_result_id = fields.Integer(allow_none=True)
    results = fields.List(fields.Nested(QcResultSchema))


class QcOverviewSchema(Schema):
    batch_number = fields.String()
    batch_status = fields.String()
    tests = fields.List(fields.Nested(QcTestSchema))


class ProblemItemSchema(Schema):
    code = fields.String()
    message = fields.String()


class DecisionSchema(Schema):
    id = fields.Integer()
    batch_number = fields.String()
    kind = fields.String()
    conditional = fields.Boolean()
    decided_at = fields.DateTime()
    justification = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    pending_tests = fields.List(fields.String())
    items = fields.List(fields.String())
    administered_items = fields.List(fields.String())
    alert_id = fields.Integer(allow_none=True)
    signature = fields.Nested(SignatureOutSchema, allow_none=True)
    batch_status = fields.String()
    item_statuses = fields.Dict(keys=fields.String(), values=fields.String())


class QueueEntrySchema(Schema):
    batch_number = fields.String()
    coi_id = fields.String()
    status = fields.String()
    process_code = fields.String()
    process_version = fields.Integer()
    conditional = fields.Boolean()
    releasable = fields.Boolean()
    conditional_release_possible = fields.Boolean()
    final_release_due = fields.Boolean(
        metadata={"description": "conditionally released, every pending result passed: "
                                 "POST /batches/{n}/release without `conditional` gives the "
                                 "final release"})
    problems = fields.List(fields.Nested(ProblemItemSchema))
    qc = fields.List(fields.Nested(QcTestSchema))


# --- the batch record (registry.batch_record_sections) ---------------------------------
# The executed batch record keeps the form it had before typed results (issue 16): times
# as ``gmp_mes.audit.format_time`` writes them and numbers as the spec gives them. The
# same schemas as the API, with only those fields overridden.

RECORD_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # gmp_mes.audit.format_time (values are UTC)


class RecordSignatureSchema(SignatureOutSchema):
    signed_at = fields.DateTime(format=RECORD_TIME)


class RecordResultSchema(QcResultSchema):
    class Meta:
        exclude = ("batch_status",)

    value = fields.Raw(allow_none=True)
    recorded_at = fields.DateTime(format=RECORD_TIME)
    invalidation_signature = fields.Nested(RecordSignatureSchema, allow_none=True)
    signature = fields.Nested(RecordSignatureSchema)
    review_signature = fields.Nested(RecordSignatureSchema, allow_none=True)


class RecordTestSchema(QcTestSchema):
    min = fields.Raw(allow_none=True)
    max = fields.Raw(allow_none=True)
    due_at = fields.DateTime(format=RECORD_TIME, allow_none=True)
    results = fields.List(fields.Nested(RecordResultSchema))


def record_signature(signature: Signature) -> dict[str, object]:
    dumped: dict[str, object] = RecordSignatureSchema().dump(signature)
    return dumped


def record_qc(rows: list[TestRow]) -> list[dict[str, object]]:
    """The "qc" section of the batch record: the overview as JSON."""
    dumped: list[dict[str, object]] = RecordTestSchema(many=True).dump(rows)
    return dumped


def record_release(state: ReleaseState | None) -> dict[str, object] | None:
    """The "release" section: the release state's labelled lines, signatures as JSON."""
    if state is None:
        return None
    return {label: record_signature(value) if isinstance(value, Signature) else value
            for label, value in state.entries().items()}
