"""Request and response schemas of the schedule API (marshmallow)."""

from __future__ import annotations

from datetime import timedelta

from marshmallow import EXCLUDE, Schema, fields

from gmp_mes.durations import format_duration
from gmp_mes.schemas import EdgeSchema
from schedule.services.timeline import MILESTONES

# --- the patient timeline and the vein-to-vein report (schedule.services.timeline,
# schedule.services.vein_to_vein) -----------------------------------------------------


def _iso(delta: timedelta | None) -> str | None:
    """ISO 8601, negative with a leading minus (ISO 8601-2): a collection time stated
    before the enrolment was recorded gives one."""
    if delta is None:
        return None
    return "-" + format_duration(-delta) if delta < timedelta(0) else format_duration(delta)


def _seconds(delta: timedelta | None) -> float | None:
    return None if delta is None else delta.total_seconds()


MilestonesSchema = Schema.from_dict(
    {name: fields.DateTime(allow_none=True) for name in MILESTONES}, name="MilestonesSchema")


class DurationSchema(Schema):
    from_ = fields.String(attribute="start", data_key="from")
    to = fields.String(attribute="end")
    duration = fields.Function(lambda d: _iso(d.delta), allow_none=True, metadata={
        "type": "string", "description": "ISO 8601 duration; null until both are reached"})
    seconds = fields.Function(lambda d: _seconds(d.delta), allow_none=True,
                              metadata={"type": "number"})


class TimelineSchema(Schema):
    """SPEC §13. Each milestone is the system's time of the event (``collected``: the
    apheresis time the collection states), null until reached; which batch, bag and
    event each one is taken from is in ``schedule.services.timeline``. gmp-mes
    extensions: ``batch_number``, ``process_code``, ``process_version``, ``batch_status``
    (the timeline's batch: the one administered first, else the latest started),
    ``vein_to_vein_seconds`` and ``durations`` (each consecutive pair of milestones)."""

    coi_id = fields.String()
    batch_number = fields.String(allow_none=True)
    process_code = fields.String(allow_none=True)
    process_version = fields.Integer(allow_none=True)
    batch_status = fields.String(allow_none=True)
    milestones = fields.Nested(MilestonesSchema)
    vein_to_vein = fields.Function(lambda t: _iso(t.vein_to_vein), allow_none=True, metadata={
        "type": "string",
        "description": "collection to administration, ISO 8601 (P20DT1H); null until "
                       "administered"})
    vein_to_vein_seconds = fields.Function(lambda t: _seconds(t.vein_to_vein),
                                           allow_none=True, metadata={"type": "number"})
    durations = fields.List(fields.Nested(DurationSchema))


class VeinToVeinQuerySchema(EdgeSchema):
    class Meta:
        # As flask-smorest reads every query: other arguments are left alone, on the
        # page (its form, a bookmarked URL) as in the API.
        unknown = EXCLUDE

    start = fields.Date(data_key="from", load_default=None, metadata={
        "description": "first UTC day of the period (default: a year before `to`)"})
    end = fields.Date(data_key="to", load_default=None, metadata={
        "description": "last UTC day, inclusive (default: today)"})


class ProcessSummarySchema(Schema):
    process_code = fields.String()
    process_version = fields.Integer(allow_none=True, metadata={
        "description": "null: every version of the process together"})
    count = fields.Integer(metadata={"description": "patients first infused in the period"})
    median_days = fields.Float(allow_none=True)
    p90_days = fields.Float(allow_none=True, metadata={
        "description": "90th percentile (numpy linear, Hyndman-Fan 7)"})
    decided = fields.Integer(metadata={"description": "batches first decided in the period"})
    rejected = fields.Integer()
    failure_rate = fields.Float(allow_none=True, metadata={
        "description": "rejected / decided; null when none decided"})


class VeinToVeinPatientSchema(Schema):
    coi_id = fields.String()
    batch_number = fields.String()
    process_code = fields.String()
    process_version = fields.Integer()
    collected_at = fields.DateTime()
    administered_at = fields.DateTime()
    vein_to_vein_days = fields.Float(attribute="days")


class VeinToVeinReportSchema(Schema):
    """Per process (SPEC §13), pseudonymised by COI (no name, date of birth or MRN)."""

    from_ = fields.Date(attribute="start", data_key="from")
    to = fields.Date(attribute="end")
    processes = fields.List(fields.Nested(ProcessSummarySchema))
    patients = fields.List(fields.Nested(VeinToVeinPatientSchema))
