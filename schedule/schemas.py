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


# --- room bookings (schedule.services.bookings) ------------------------------------------

from marshmallow import validate  # noqa: E402 - appended section

from gmp_mes.schemas import StrictSchema, Text  # noqa: E402
from schedule.models import BookingStatus  # noqa: E402
from schedule.services.bookings import warnings_of  # noqa: E402


def _time(description: str, *, required: bool = True) -> fields.AwareDateTime:
    if required:
        return fields.AwareDateTime(required=True, default_timezone=None,
                                    metadata={"description": description})
    return fields.AwareDateTime(load_default=None, default_timezone=None,
                                metadata={"description": description})


class BookingInSchema(StrictSchema):
    coi_id = fields.String(required=True, validate=validate.Length(min=1, max=20))
    process_code = fields.String(required=True, validate=validate.Length(min=1, max=32))
    room = fields.String(required=True, validate=validate.Length(min=1, max=40))
    apheresis_at = _time("the planned apheresis (collection), with its offset")
    planned_infusion_at = _time("the planned infusion, with its offset")
    manufacturing_start = _time("gmp-mes: when the batch starts (default: the apheresis "
                                "time); later than the hold time warns",
                                required=False)


class BookingReasonSchema(StrictSchema):
    reason = Text(required=True, validate=validate.Length(min=1, max=500))


class RescheduleSchema(BookingReasonSchema):
    apheresis_at = _time("new apheresis time (default: unchanged; the start moves with "
                         "it unless given)", required=False)
    planned_infusion_at = _time("new planned infusion (default: unchanged)", required=False)
    manufacturing_start = _time("new start (default: unchanged, or the new apheresis)",
                                required=False)
    room = fields.String(load_default=None, validate=validate.Length(min=1, max=40))


class BookingQuerySchema(EdgeSchema):
    class Meta:
        unknown = EXCLUDE

    start = fields.Date(data_key="from", load_default=None, metadata={
        "description": "first UTC day a window reaches (default: no bound)"})
    end = fields.Date(data_key="to", load_default=None, metadata={
        "description": "last UTC day, inclusive (default: no bound)"})
    room = fields.String(load_default=None, validate=validate.Length(max=40))
    coi_id = fields.String(load_default=None, validate=validate.Length(max=20))
    status = fields.String(load_default=None,
                           validate=validate.OneOf([s.value for s in BookingStatus]))


class BookingWarningSchema(Schema):
    code = fields.String(metadata={"description": "hold_time_exceeded, "
                                   "release_after_infusion, qc_result_after_infusion or "
                                   "expires_before_infusion"})
    message = fields.String()


class BookingSchema(Schema):
    """A room booking (SPEC §13). gmp-mes extensions: ``product_expires_at`` (fill +
    the final product's shelf life), ``thaw_from`` (the planned infusion - the post-thaw
    window), ``status``, ``batch_number`` (the batch started on it), ``revision``."""

    id = fields.Integer()
    coi_id = fields.String()
    process_code = fields.String()
    process_version = fields.Integer()
    room = fields.String(attribute="room_code")
    apheresis_at = fields.DateTime()
    planned_infusion_at = fields.DateTime()
    manufacturing_start = fields.DateTime()
    manufacturing_end = fields.DateTime()
    release_expected = fields.DateTime()
    product_expires_at = fields.DateTime()
    thaw_from = fields.DateTime(allow_none=True)
    warnings = fields.Function(lambda b: warnings_of(b),
                               metadata={"type": "array", "items": {"type": "object"}})
    status = fields.String()
    batch_number = fields.String(allow_none=True)
    revision = fields.Integer()
    booked_by = fields.String(attribute="booker.username")
    booked_at = fields.DateTime()
    cancelled_at = fields.DateTime(allow_none=True)
    cancel_reason = fields.String(allow_none=True)
