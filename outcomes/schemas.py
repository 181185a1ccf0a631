"""Schemas of the outcomes domain: follow-up visits and records (SPEC §16)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from gmp_mes.schemas import EdgeSchema, SignatureOutSchema, SignatureSchema, StrictSchema
from outcomes import grading
from outcomes.models import Response, VisitState

VISIT_CODE = validate.Regexp(r"^P[0-9A-Z]{1,14}$", error="a visit code such as P28D or P2Y")


def _choices(enum: Any) -> validate.OneOf:
    return validate.OneOf([m.value for m in enum])


class CrsInSchema(StrictSchema):
    """CRS elements (ASTCT 2019, SPEC §16). The grade is computed, never accepted."""

    fever = fields.Boolean(required=True)
    hypotension = fields.String(load_default="none", validate=_choices(grading.Hypotension))
    hypoxia = fields.String(load_default="none", validate=_choices(grading.Hypoxia))
    # Table 4 footnote: antipyretics or anti-cytokine therapy mask the fever.
    fever_masked_by_treatment = fields.Boolean(load_default=False)


class IcansInSchema(StrictSchema):
    """ICANS elements (ASTCT 2019, adults, SPEC §16)."""

    ice_score = fields.Integer(required=True, strict=True, validate=validate.Range(0, 10))
    consciousness = fields.String(load_default="alert", validate=_choices(grading.Consciousness))
    seizure = fields.String(load_default="none", validate=_choices(grading.Seizure))
    motor = fields.String(load_default="none", validate=_choices(grading.Motor))
    cerebral_edema = fields.String(load_default="none", validate=_choices(grading.CerebralEdema))


class GradesInSchema(StrictSchema):
    """The dry run: elements only, no signature."""

    crs = fields.Nested(CrsInSchema, load_default=None, allow_none=True)
    icans = fields.Nested(IcansInSchema, load_default=None, allow_none=True)


class FollowUpInSchema(GradesInSchema):
    visit = fields.String(required=True, validate=VISIT_CODE)
    # Needed only when the patient has the same visit for two batches.
    batch_number = fields.String(load_default=None, validate=validate.Length(min=1, max=32))
    assessed_at = fields.AwareDateTime(required=True, default_timezone=None)
    response = fields.String(required=True, validate=_choices(Response))
    alive = fields.Boolean(required=True)
    death_date = fields.Date(load_default=None, allow_none=True)
    corrects = fields.Integer(load_default=None, strict=True, validate=validate.Range(min=1))
    reason = fields.String(load_default=None, validate=validate.Length(max=2000))
    signature = fields.Nested(SignatureSchema, required=True)


class GradesSchema(Schema):
    crs_grade = fields.Integer(allow_none=True)
    icans_grade = fields.Integer(allow_none=True)


class FollowUpRecordSchema(Schema):
    id = fields.Integer()
    coi_id = fields.String()
    batch_number = fields.String()
    visit = fields.String()
    version = fields.Integer()
    supersedes_id = fields.Integer(allow_none=True)
    correction_reason = fields.String(allow_none=True)
    assessed_at = fields.DateTime()
    response = fields.String()
    crs = fields.Dict(attribute="crs_elements", allow_none=True)
    icans = fields.Dict(attribute="icans_elements", allow_none=True)
    crs_grade = fields.Integer(allow_none=True)
    icans_grade = fields.Integer(allow_none=True)
    alive = fields.Boolean()
    death_date = fields.Date(allow_none=True)
    recorded_at = fields.DateTime()
    signature = fields.Nested(SignatureOutSchema)


class VisitSchema(Schema):
    visit = fields.Function(lambda v: v.visit.visit)
    label = fields.String()
    batch_number = fields.Function(lambda v: v.visit.batch_number)
    item_id = fields.Function(lambda v: v.visit.item_id)
    administered_at = fields.Function(lambda v: v.visit.administered_at.isoformat())
    due_at = fields.Function(lambda v: v.visit.due_at.isoformat())
    overdue_at = fields.Function(lambda v: v.visit.overdue_at.isoformat())
    state = fields.String(validate=_choices(VisitState))
    record = fields.Nested(FollowUpRecordSchema, allow_none=True)


class FollowUpSchema(Schema):
    coi_id = fields.String()
    visits = fields.List(fields.Nested(VisitSchema))


class OutcomeQuerySchema(EdgeSchema):
    process = fields.String(load_default="CART-AUTO", validate=validate.Regexp(
        r"^[A-Za-z][A-Za-z0-9-]{0,31}$", error="a process code such as CART-AUTO"))
    attribute = fields.String(load_default=None, validate=validate.Regexp(
        r"^(qc|expansion|forecast):[a-z][a-z0-9_]{0,59}$",
        error="qc:<test>, expansion:fold or forecast:p_target"))


class ExpansionSchema(Schema):
    counts = fields.Integer()
    days = fields.Float(allow_none=True)
    first_viable_cells = fields.Float(allow_none=True)
    last_viable_cells = fields.Float(allow_none=True)
    fold = fields.Float(allow_none=True)
    final_viability = fields.Float(allow_none=True)


class HarvestForecastSchema(Schema):
    model = fields.String(allow_none=True, metadata={
        "description": "exponential or logistic; null: no forecast (see reason)"})
    reason = fields.String(allow_none=True)
    points = fields.Integer(metadata={"description": "counts before the harvest day fitted"})
    as_of_day = fields.Float(allow_none=True, metadata={
        "description": "culture day of the last count fitted"})
    harvest_day = fields.Float()
    target = fields.Float()
    doubling_time_h = fields.Float(allow_none=True)
    predicted_median = fields.Float(allow_none=True, metadata={
        "description": "cells at the harvest day"})
    predicted_low = fields.Float(allow_none=True, metadata={
        "description": "90 % prediction interval, low end"})
    predicted_high = fields.Float(allow_none=True)
    p_target = fields.Float(allow_none=True, metadata={
        "description": "probability of reaching the target by the harvest day"})


class OutcomeRowSchema(Schema):
    coi_id = fields.String()
    batch_number = fields.String()
    process_version = fields.Integer()
    administered_at = fields.DateTime()
    qc = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True))
    qc_units = fields.Dict(keys=fields.String(), values=fields.String(allow_none=True))
    dose = fields.Float(allow_none=True)
    dose_unit = fields.String(allow_none=True)
    expansion = fields.Nested(ExpansionSchema)
    responses = fields.Dict(keys=fields.String(), values=fields.String())
    best_response = fields.String(allow_none=True)
    worst_crs_grade = fields.Integer(allow_none=True)
    worst_icans_grade = fields.Integer(allow_none=True)
    alive = fields.Boolean(allow_none=True)
    forecast = fields.Nested(HarvestForecastSchema, allow_none=True, metadata={
        "description": "the expansion forecast at the last count before the harvest day "
                       "(SPEC §15); null: the batch's process declares no [forecast]"})


class OutcomeReportSchema(Schema):
    process = fields.String()
    visits = fields.List(fields.String())
    rows = fields.List(fields.Nested(OutcomeRowSchema))


class StatementInSchema(StrictSchema):
    signature = fields.Nested(SignatureSchema, required=True)


class StatementSchema(Schema):
    id = fields.Function(lambda v: v.statement.id)
    agreement_code = fields.Function(lambda v: v.statement.agreement_code)
    agreement_version = fields.Function(lambda v: v.statement.agreement_version)
    coi_id = fields.Function(lambda v: v.statement.coi_id)
    batch_number = fields.Function(lambda v: v.statement.batch_number)
    issued_at = fields.Function(lambda v: v.statement.issued_at.isoformat())
    content = fields.Dict(attribute="document")
    content_digest = fields.Function(lambda v: v.statement.content_digest)
    signature_binds = fields.Boolean(attribute="binds")
    signature = fields.Function(lambda v: SignatureOutSchema().dump(v.statement.signature))
