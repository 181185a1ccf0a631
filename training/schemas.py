"""Marshmallow schemas of the training API (SPEC §12): strict input, declared output (they
dump the services' ``RecordView`` and ``Standing``)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from marshmallow import Schema, fields, validate

from gmp_mes.schemas import SignatureOutSchema, SignatureSchema, StrictSchema, Text
from processes.definitions import QUALIFICATION_CODE
from training.models import RecordStatus

STATUSES = [status.value for status in RecordStatus]
DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CODE_HELP = ("lower case letters, digits, '_' and '-', starting with a letter: the code a "
             "process step names as its qualification")


class ValidUntil(fields.AwareDateTime):
    """An ISO date-time with its offset, or a date: valid through that whole day at the
    person's site (until the next local midnight)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_timezone=None, **kwargs)

    # The base answers a datetime only; a date here is widened by the service.
    def _deserialize(  # type: ignore[override]
            self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime | date:
        if isinstance(value, str) and DATE_ONLY.fullmatch(value.strip()):
            loaded: date = fields.Date()._deserialize(value.strip(), attr, data, **kwargs)
            return loaded
        return super()._deserialize(value, attr, data, **kwargs)


class GrantInSchema(StrictSchema):
    code = fields.String(required=True, validate=[
        validate.Length(min=1, max=48),
        validate.Regexp(QUALIFICATION_CODE, error=CODE_HELP)],
        metadata={"description": CODE_HELP, "example": "aseptic_processing"})
    valid_until = ValidUntil(required=True, metadata={
        "description": "until when the training holds, in the future: an ISO 8601 "
                       "date-time with offset, or a date (valid through that day at the "
                       "person's site)"})
    signature = fields.Nested(SignatureSchema, required=True, metadata={
        "description": "the grantor's e-signature, meaning `approved`"})


class RevokeInSchema(StrictSchema):
    reason = Text(required=True, multiline=True, validate=validate.Length(min=1, max=2000),
                  metadata={"description": "why the qualification is withdrawn (audited)"})


class RecordSchema(Schema):
    id = fields.Integer()
    username = fields.String()
    code = fields.String()
    status = fields.String(metadata={"enum": STATUSES})
    current = fields.Boolean(metadata={
        "description": "the record deciding the person's standing in this code now"})
    granted_at = fields.DateTime()
    valid_until = fields.DateTime()
    granted_by = fields.String()
    revoked_at = fields.DateTime(allow_none=True)
    revoked_by = fields.String(allow_none=True)
    revoke_reason = fields.String(allow_none=True)
    signature = fields.Nested(SignatureOutSchema)


class StandingSchema(Schema):
    code = fields.String()
    status = fields.String(metadata={"enum": [*STATUSES, "none"]})
    valid_until = fields.DateTime(allow_none=True)


class PersonQualificationsSchema(Schema):
    username = fields.Function(lambda p: p.user.username)
    full_name = fields.Function(lambda p: p.user.full_name)
    site = fields.Function(lambda p: p.user.site.code)
    current = fields.List(fields.Nested(StandingSchema), attribute="standings", metadata={
        "description": "the standing in each qualification the person ever held, by code"})
    qualifications = fields.List(fields.Nested(RecordSchema), attribute="records", metadata={
        "description": "every training record, current and past, newest first"})
