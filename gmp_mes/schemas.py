"""Core marshmallow schemas shared by every domain's API."""

from __future__ import annotations

import math
import re
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate

from gmp_mes.edge import InputRefused, check_integer, check_moment, check_text
from gmp_mes.models import DecimalSeparator, Meaning, Role, SiteKind
from gmp_mes.signatures import SignatureInput


def form_fields(form: Any) -> dict[str, str]:
    """A page form as a schema loads it: values trimmed, empty fields and the CSRF token
    left out (so a required field left empty reports that it is missing)."""
    return {key: value.strip() for key, value in form.items()
            if key != "csrf_token" and value.strip()}


# A number as a person types it: one decimal separator, the site's (comma or point) or the
# ISO point, an optional exponent; no grouping, no "nan", "inf" or "1_000" (which float()
# alone would take).
_FORM_NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][+-]?\d+)?")
# Digits with a comma somewhere: a number in another convention ("1,5", "1,234", "1,000.5").
_COMMA_NUMBER = re.compile(r"[+-]?[\d.,]*,[\d.,]*(?:[eE][+-]?\d+)?")


class DecimalSeparatorRefused(ValueError):
    """A comma typed in a number at a site that writes a decimal point: "1,234" may mean
    1234 or 1.234, so it is refused, never guessed (issue 15)."""


def point_message() -> str:
    return "this site writes decimals with a point: 1.5 (no comma, no thousands separator)"


def number_example(separator: str, example: str = "1.5") -> str:
    """An example number as the site writes it: "1,5" at a comma site."""
    return example.replace(".", separator)


def form_number(raw: str, separator: str) -> float | str | None:
    """A number typed in a page form, the one parser of every form that takes a number
    (step values, QC results, the collection volume, corrections), with the decimal
    separator of the user's site (``Site.decimal_separator``): the point is always
    accepted (ISO), the comma only at a comma site; at a point site a comma raises
    ``DecimalSeparatorRefused``. Grouping separators are never accepted. Other text that
    is not a number comes back as typed, for the service or schema to refuse with its own
    message; empty is None."""
    raw = raw.strip()
    if not raw:
        return None
    if separator != "," and _COMMA_NUMBER.fullmatch(raw) and any(c.isdigit() for c in raw):
        raise DecimalSeparatorRefused(point_message())
    if not _FORM_NUMBER.fullmatch(raw):
        return raw
    number = float(raw.replace(",", "."))
    return number if math.isfinite(number) else raw


class FormNumber(fields.Float):
    """A number field of a page form schema, read by ``form_number`` with the separator
    the schema was made with (``decimal_separator``, the user's site)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, str):
            separator = getattr(self.root, "decimal_separator", ".")
            try:
                number = form_number(value, separator)
            except DecimalSeparatorRefused as exc:
                raise ValidationError(str(exc)) from None
            if not isinstance(number, float):
                raise self.make_error("invalid")
            value = number
        return super()._deserialize(value, attr, data, **kwargs)


def field_errors(exc: ValidationError) -> dict[str, list[str]]:
    """A schema's errors as a page shows them: a list of messages per field."""
    messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    return {field: [str(m) for m in (value if isinstance(value, list) else [value])]
            for field, value in messages.items()}


def _edge_validator(check: Any, **kwargs: Any) -> Any:
    def validator(value: Any) -> None:
        try:
            check(value, **kwargs)
        except InputRefused as exc:
            raise ValidationError(str(exc)) from None

    validator.edge_limit = True  # type: ignore[attr-defined]
    return validator


def _with_edge_limit(field: fields.Field, validator: Any) -> None:
    """Put the edge's check first, once. The list is replaced, never changed in place:
    marshmallow copies a declared field shallowly for every schema instance, so an
    in-place insert would add one more check (and one more message) per instance."""
    if not any(getattr(v, "edge_limit", False) for v in field.validators):
        field.validators = [validator, *field.validators]


class Text(fields.String):
    """Free text (deviation descriptions, alert notes, reasons): no control characters,
    NUL included; ``multiline=True`` allows tab and line breaks (text areas)."""

    def __init__(self, *args: Any, multiline: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.multiline = multiline
        _with_edge_limit(self, _edge_validator(check_text, multiline=multiline))


class ScannedText(fields.String):
    """What a scanner sent, exactly as read (a QR or barcode payload): control characters
    are not refused here, because a garbage scan is a recorded event; the scan service
    refuses it as malformed and records that safely (SPEC §4)."""


def _add_edge_limits(field: fields.Field) -> None:
    """The edge's limits (gmp_mes.edge) on every input field: text without control
    characters, integers within 64 bits, dates within years 1900-2999."""
    if isinstance(field, fields.String) and not isinstance(field, Text | ScannedText):
        _with_edge_limit(field, _edge_validator(check_text))
    elif isinstance(field, fields.Integer):
        _with_edge_limit(field, _edge_validator(check_integer))
    elif isinstance(field, fields.Date | fields.DateTime):
        _with_edge_limit(field, _edge_validator(check_moment))
    for inner in (getattr(field, "inner", None), getattr(field, "key_field", None),
                  getattr(field, "value_field", None)):
        if isinstance(inner, fields.Field):
            _add_edge_limits(inner)


class EdgeSchema(Schema):
    """Base of every input schema: the edge's limits on each field (``Text``)."""

    def on_bind_field(self, field_name: str, field_obj: fields.Field) -> None:
        _add_edge_limits(field_obj)


class StrictSchema(EdgeSchema):
    """Unknown fields are an error: a typo must never be silently dropped."""

    class Meta:
        unknown = RAISE


class SignatureSchema(StrictSchema):
    password = fields.String(required=True, validate=validate.Length(min=1, max=200))
    meaning = fields.String(required=True, validate=validate.OneOf([m.value for m in Meaning]))
    reason = fields.String(load_default=None, validate=validate.Length(max=2000))

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> SignatureInput:
        return SignatureInput(**data)


class SignatureOutSchema(Schema):
    printed_name = fields.String()
    username = fields.String()
    meaning = fields.String()
    reason = fields.String(allow_none=True)
    signed_at = fields.DateTime()
    content_digest = fields.String()
    manifestation = fields.Function(lambda s: s.manifestation())


class ProblemSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    code = fields.String()
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


class TokenRequestSchema(StrictSchema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=64))
    password = fields.String(required=True, validate=validate.Length(min=1, max=200))


class TokenSchema(Schema):
    token = fields.String()
    expires_at = fields.DateTime()


class SiteInSchema(StrictSchema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=32))
    kind = fields.String(required=True, validate=validate.OneOf([k.value for k in SiteKind]))
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    timezone = fields.String(load_default="UTC", validate=validate.Length(min=1, max=64))
    decimal_separator = fields.String(
        load_default=DecimalSeparator.POINT.value,
        validate=validate.OneOf([d.value for d in DecimalSeparator]),
        metadata={"description": "how the site's page forms write decimals: \".\" or "
                                 "\",\" (the ISO point is always accepted too)"})


class SiteSchema(Schema):
    code = fields.String()
    kind = fields.String()
    name = fields.String()
    timezone = fields.String()
    decimal_separator = fields.String()


class AuditHeadSchema(Schema):
    anchor = fields.String(allow_none=True, metadata={"description": "SEQ:HASH"})
    seq = fields.Integer()
    hash = fields.String(allow_none=True)
    at = fields.DateTime()


class EmailInSchema(StrictSchema):
    """Where a user's alert e-mails go; null removes the address."""

    email = fields.String(required=True, allow_none=True, validate=validate.Length(max=254))


class UserInSchema(StrictSchema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=64))
    full_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    password = fields.String(required=True, validate=validate.Length(min=1, max=200))
    roles = fields.List(
        fields.String(validate=validate.OneOf([r.value for r in Role])),
        required=True,
        validate=validate.Length(min=1),
    )
    site = fields.String(required=True, validate=validate.Length(min=1, max=32))
    # Alert e-mails go to the users holding an alert's roles at its site (optional).
    email = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=3, max=254)
    )


class UserSchema(Schema):
    username = fields.String()
    full_name = fields.String()
    email = fields.String(allow_none=True)
    roles = fields.Function(lambda u: sorted(u.roles))
    site = fields.Function(lambda u: u.site.code)
    active = fields.Boolean()
    locked = fields.Function(lambda u: u.locked_at is not None)
    failed_logins = fields.Integer()
    must_change_password = fields.Boolean()
    password_changed_at = fields.DateTime(allow_none=True)


class PasswordChangeSchema(StrictSchema):
    """Change a password (a one-time one too): the current one proves who is asking."""

    username = fields.String(required=True, validate=validate.Length(min=1, max=64))
    current_password = fields.String(required=True, validate=validate.Length(min=1, max=256))
    new_password = fields.String(required=True, validate=validate.Length(min=1, max=256))


class PasswordResetSchema(Schema):
    username = fields.String()
    one_time_password = fields.String(
        metadata={"description": "shown once; must be changed before it gives a token"}
    )
    must_change_password = fields.Boolean()


class CredentialSchema(Schema):
    """A bearer token or page session of a user (never its secret)."""

    id = fields.Integer()
    kind = fields.String()
    created_at = fields.DateTime()
    expires_at = fields.DateTime()
    revoked_at = fields.DateTime(allow_none=True)
    revoke_reason = fields.String(allow_none=True)
    active = fields.Boolean()


class RevokeSchema(StrictSchema):
    reason = fields.String(load_default=None, validate=validate.Length(max=200))


class AuditQuerySchema(EdgeSchema):
    class Meta:
        unknown = EXCLUDE

    entity_type = fields.String(load_default=None)
    entity_id = fields.String(load_default=None)
    username = fields.String(load_default=None)
    action = fields.String(load_default=None)
    since = fields.AwareDateTime(load_default=None, default_timezone=None)
    until = fields.AwareDateTime(load_default=None, default_timezone=None)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0))
    # Keyset paging: the events older than this seq (the last one of the previous page).
    before = fields.Integer(load_default=None, validate=validate.Range(min=1))


class AuditEventSchema(Schema):
    seq = fields.Integer()
    occurred_at = fields.String()
    user_id = fields.Integer(allow_none=True)
    username = fields.String()
    action = fields.String()
    entity_type = fields.String()
    entity_id = fields.String()
    reason = fields.String(allow_none=True)
    record: fields.Field = fields.Raw()  # the API's own schema reads it as JSON
    hash = fields.String()
    prev_hash = fields.String()
