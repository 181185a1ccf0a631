"""Marshmallow schemas of the forecasts API (SPEC §15): they dump the services' typed
results (``BatchForecast``, ``TrendChart``)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from gmp_mes.schemas import StrictSchema


class PredictedSchema(Schema):
    median = fields.Float(metadata={"description": "cells at the harvest day"})
    low = fields.Float()
    high = fields.Float()
    level = fields.Float(metadata={"description": "of the prediction interval: 0.9"})


class ForecastSchema(Schema):
    batch_number = fields.String()
    process_code = fields.String()
    process_version = fields.Integer()
    model = fields.String(allow_none=True, metadata={
        "description": "exponential or logistic; null: no forecast (see reason)"})
    reason = fields.String(allow_none=True)
    points = fields.Integer(allow_none=True, metadata={"description": "counts fitted"})
    doubling_time_h = fields.Float(allow_none=True)
    harvest_day = fields.Float(allow_none=True)
    target = fields.Float(allow_none=True)
    alert_below = fields.Float(allow_none=True)
    predicted = fields.Nested(PredictedSchema, allow_none=True)
    p_target = fields.Float(allow_none=True, metadata={
        "description": "probability of reaching the target by the harvest day"})
    criterion = fields.Dict(keys=fields.String(), values=fields.Float(), metadata={
        "description": "AICc of each model fitted (the logistic replaces the exponential "
                       "when lower by at least 2)"})
    notes = fields.List(fields.String())
    days = fields.List(fields.Float())
    counts = fields.List(fields.Float())


def dump_forecast(result: Any) -> dict[str, Any]:
    """A ``services.BatchForecast`` as the API answers it."""
    fit, spec = result.forecast, result.spec
    return ForecastSchema().dump({
        "batch_number": result.batch_number, "process_code": result.process_code,
        "process_version": result.process_version, "model": result.model,
        "reason": result.reason, "points": fit.points if fit else None,
        "doubling_time_h": fit.doubling_time_h if fit else None,
        "harvest_day": spec.harvest_day if spec else None,
        "target": spec.target if spec else None,
        "alert_below": spec.alert_below if spec else None,
        "predicted": fit.predicted if fit else None,
        "p_target": fit.p_target if fit else None,
        "criterion": fit.criterion if fit else {}, "notes": list(fit.notes) if fit else [],
        "days": list(result.days), "counts": list(result.counts),
    })


class LimitsSchema(Schema):
    centre = fields.Float()
    lower = fields.Float(metadata={"description": "centre - 3 sigma"})
    upper = fields.Float(metadata={"description": "centre + 3 sigma"})
    sigma = fields.Float(metadata={"description": "mean moving range / d2 (1.128)"})
    mr_centre = fields.Float(metadata={"description": "mean moving range"})
    mr_upper = fields.Float(metadata={"description": "D4 (3.267) x mean moving range"})
    baseline = fields.Integer(metadata={"description": "released batches the limits rest on"})


class TrendPointSchema(Schema):
    batch_number = fields.String()
    started_at = fields.DateTime()
    status = fields.String()
    value = fields.Float()
    moving_range = fields.Float(allow_none=True)
    baseline = fields.Boolean(metadata={"description": "a released batch (sets the limits)"})
    rules = fields.List(fields.Integer(), metadata={"description": "Nelson rules 1-4 broken"})


class AttributeSchema(Schema):
    key = fields.String()
    label = fields.String()
    unit = fields.String()


class TrendChartSchema(Schema):
    process_code = fields.String()
    attribute = fields.Nested(AttributeSchema)
    points = fields.List(fields.Nested(TrendPointSchema))
    limits = fields.Nested(LimitsSchema, allow_none=True)
    reason = fields.String(allow_none=True, metadata={"description": "why no limits"})
    min_baseline = fields.Integer()


class TrendQuerySchema(StrictSchema):
    """The trends page's form: which attribute to chart."""

    attribute = fields.String(load_default=None, validate=validate.Length(min=1, max=200))
