"""Marshmallow schemas of the identity API: separate write (strict) and read schemas."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_dump, validate
from marshmallow.utils import get_value

from gmp_mes.schemas import FormNumber, ScannedText, SignatureSchema, StrictSchema
from identity.models import ItemKind, ItemStatus
from identity.services import CUSTODY_ACTIONS, IDENTITY_FIELDS


def _printable(value: str) -> None:
    """Names, MRNs, sites and locations are typed text: no control characters."""
    if not value.isprintable():
        raise ValidationError("must not contain control characters")


_text: list[Callable[[str], object]] = [validate.Length(min=1, max=100), _printable]


class PatientInSchema(StrictSchema):
    given_name = fields.String(required=True, validate=_text)
    family_name = fields.String(required=True, validate=_text)
    date_of_birth = fields.Date(required=True)
    mrn = fields.String(required=True, validate=[validate.Length(min=1, max=40), _printable])
    treatment_site = fields.String(required=True,
                                   validate=[validate.Length(min=1, max=32), _printable])


_volume = validate.Range(min=0, min_inclusive=False, max=5000)


class CollectionInSchema(StrictSchema):
    coi_id = fields.String(required=True, validate=[validate.Length(min=1, max=20), _printable])
    collected_at = fields.AwareDateTime(required=True, default_timezone=None)
    site = fields.String(required=True, validate=[validate.Length(min=1, max=32), _printable])
    volume_ml = fields.Float(required=True, allow_nan=False, validate=_volume)
    din = fields.String(load_default=None, allow_none=True,
                        validate=[validate.Length(min=1, max=20), _printable])


# Page forms: the API's rules, with messages for a person at a form.

class PatientFormSchema(PatientInSchema):
    date_of_birth = fields.Date(required=True,
                                error_messages={"invalid": "enter a date like 1970-05-17"})


class CollectionFormSchema(CollectionInSchema):
    # A datetime-local field: the site's local time, without an offset.
    collected_at = fields.NaiveDateTime(  # type: ignore[assignment]  # the form has no offset
        required=True, error_messages={"invalid": "enter the date and time of collection"})
    # The site's decimal separator (or the ISO point), by the one helper of every page
    # form (``gmp_mes.schemas.form_number``, issue 15).
    volume_ml = FormNumber(required=True, allow_nan=False, validate=_volume,
                           error_messages={"invalid": "enter the volume in mL, e.g. 250"})

    def __init__(self, *args: Any, decimal_separator: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decimal_separator = decimal_separator


class CustodyInSchema(StrictSchema):
    action = fields.String(required=True, validate=validate.OneOf(CUSTODY_ACTIONS))
    site = fields.String(required=True, validate=[validate.Length(min=1, max=32), _printable])
    location = fields.String(load_default=None, allow_none=True,
                             validate=[validate.Length(max=100), _printable])
    workstation = fields.String(load_default=None, allow_none=True,
                                validate=[validate.Length(max=100), _printable])
    to_user = fields.String(
        load_default=None, allow_none=True, validate=[validate.Length(max=64), _printable],
        metadata={"description": "handover only: the user (of the item's site) who takes "
                                 "custody; the caller when absent"})
    position = fields.String(
        load_default=None, allow_none=True, validate=[validate.Length(max=100), _printable],
        metadata={"description": "move and receive: the storage position "
                                 "`<SITE/FREEZER/RACK/BOX>:<position>` (one item per "
                                 "position, 409 `position_occupied`)"})


class ScanInSchema(StrictSchema):
    payload = ScannedText(required=True, validate=validate.Length(min=1, max=2000))
    workstation = fields.String(required=True,
                                validate=[validate.Length(min=1, max=100), _printable])
    batch_number = fields.String(load_default=None, allow_none=True,
                                 validate=[validate.Length(min=1, max=40), _printable])


class BedsideInSchema(StrictSchema):
    patient_payload = ScannedText(required=True, validate=validate.Length(min=1, max=2000))
    product_payload = ScannedText(required=True, validate=validate.Length(min=1, max=2000))


class AdministrationInSchema(BedsideInSchema):
    signature = fields.Nested(SignatureSchema, required=True)


class ReasonSchema(Schema):
    code = fields.String()
    message = fields.String()


class ItemBriefSchema(Schema):
    item_id = fields.String()
    kind = fields.String(metadata={"enum": [k.value for k in ItemKind]})
    status = fields.String(metadata={
        "enum": [s.value for s in ItemStatus],
        "description": "final product: quarantine -> released | conditionally_released | "
                       "rejected; released -> shipped -> received -> thawed -> administered; "
                       "blocked (quality block), expired, destroyed. Starting material, "
                       "intermediates and samples: available, in_process, shipped, received, "
                       "consumed, blocked, expired, destroyed. Wristbands: available, "
                       "destroyed. Final: rejected, administered, expired, destroyed, "
                       "consumed.",
    })
    coi_id = fields.String()
    batch_number = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    site_code = fields.String()
    location = fields.String(allow_none=True)
    custodian = fields.Integer(allow_none=True)
    ship_to = fields.String(allow_none=True)
    expires_at = fields.DateTime(allow_none=True)
    expiry_warnings = fields.Function(
        lambda i: [w for w in (get_value(i, "expiry_warnings") or "").split(",") if w],
        metadata={"description": "ISO 8601 durations before expiry when warnings are raised"})
    post_thaw_window = fields.String(allow_none=True)
    thawed_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class CustodyEventSchema(Schema):
    id = fields.Integer()
    action = fields.String()
    site_code = fields.String(allow_none=True)
    location = fields.String(allow_none=True)
    destination_site = fields.String(allow_none=True)
    user_id = fields.Integer(allow_none=True)
    username = fields.String()
    workstation = fields.String(allow_none=True)
    occurred_at = fields.DateTime()
    ok = fields.Boolean(allow_none=True)
    flagged = fields.Boolean()
    detail = fields.Function(lambda e: json.loads(e.detail) if e.detail else None)


class LabelBriefSchema(Schema):
    label_id = fields.String()
    serial = fields.String(allow_none=True)  # the printed copy (None: 6-field label)
    format = fields.String()
    reprint = fields.Boolean()
    printed_at = fields.DateTime()
    printed_by = fields.Raw()
    copies = fields.Integer()
    voided = fields.Function(lambda p: bool(getattr(p, "voided", False)))


class ItemSchema(ItemBriefSchema):
    parents = fields.List(fields.String())
    children = fields.List(fields.String())
    ancestors = fields.List(fields.String())
    descendants = fields.List(fields.String())
    custody = fields.List(fields.Nested(CustodyEventSchema), metadata={
        "description": "one page of the custody trail, oldest first (custody_limit)"})
    custody_older = fields.Integer(allow_none=True, metadata={
        "description": "pass as custody_before for the page of older events; null: none"})
    labels = fields.List(fields.Nested(LabelBriefSchema))


class ItemQuerySchema(StrictSchema):
    """GET /items/{item_id}: the custody trail comes in pages (issue 15: a bag with
    20,000 events must not answer with megabytes)."""

    custody_limit = fields.Integer(load_default=500, validate=validate.Range(min=1, max=5000))
    custody_before = fields.Integer(load_default=None,
                                    validate=validate.Range(min=1, max=2**62))


class CollectionBriefSchema(Schema):
    id = fields.Integer()
    coi_id = fields.String()
    collected_at = fields.DateTime()
    entered_at = fields.DateTime()
    site = fields.String(attribute="site_code")
    volume_ml = fields.Float()
    din = fields.String(allow_none=True)
    item_id = fields.String()


class CollectionSchema(CollectionBriefSchema):
    item = fields.Nested(ItemBriefSchema)


class BatchBriefSchema(Schema):
    batch_number = fields.String()
    status = fields.String()
    process_code = fields.String()
    process_version = fields.Integer()


class PatientSchema(Schema):
    coi_id = fields.String()
    coi_label = fields.String(metadata={"description": "eye-readable form; check boxed"})
    coi_check = fields.String()
    initials = fields.String(metadata={"description": "always present"})
    identity_visible = fields.Boolean(metadata={
        "description": "false: the caller is not of the patient's treatment or collection "
                       "site, QA or admin, and the four identity fields are left out"})
    given_name = fields.String()
    family_name = fields.String()
    date_of_birth = fields.Date()
    mrn = fields.String()
    treatment_site = fields.String()
    wristband_item_id = fields.String()
    enrolled_at = fields.DateTime()
    items = fields.List(fields.Nested(ItemBriefSchema))
    collections = fields.List(fields.Nested(CollectionBriefSchema))
    batches = fields.List(fields.Nested(BatchBriefSchema))

    @post_dump
    def _minimise(self, data: dict[str, object], **_: object) -> dict[str, object]:
        """The identity fields are left out, not null, when the caller may not see them."""
        if not data.get("identity_visible"):
            for name in IDENTITY_FIELDS:
                data.pop(name, None)
        return data


class ScannedSubjectSchema(Schema):
    """A LOT or EQP label's subject as its domain answers it (SPEC §11)."""

    kind = fields.String(metadata={"description": "lot, equipment"})
    id = fields.String(attribute="subject_id")
    title = fields.String()
    url = fields.String(allow_none=True, metadata={"description": "its page"})


class ScanSchema(Schema):
    ok = fields.Boolean()
    item = fields.Nested(ItemBriefSchema, allow_none=True, metadata={
        "description": "null for a material lot or equipment label (see subject)"})
    coi_id = fields.String(allow_none=True)
    status = fields.String(allow_none=True, metadata={
        "description": "the item's status, or the lot's or equipment's"})
    expires_at = fields.DateTime(allow_none=True)
    batch_number = fields.String(allow_none=True)
    reasons = fields.List(fields.Nested(ReasonSchema), metadata={
        "description": "empty when OK; a LOT or EQP label no domain knows: unknown_subject; "
                       "one checked against a batch: not_an_item"})
    subject = fields.Nested(ScannedSubjectSchema, allow_none=True, metadata={
        "description": "what a verified LOT or EQP label names (null for an item's label)"})


class BedsideSchema(Schema):
    match = fields.Boolean()
    reasons = fields.List(fields.Nested(ReasonSchema))
    warnings = fields.List(fields.Nested(ReasonSchema), metadata={
        "description": "with a MATCH: `conditional_release` naming the pending tests"})
    item_id = fields.String(allow_none=True)
    coi_id = fields.String(allow_none=True)
    verification_id = fields.Integer()


class AdministrationSchema(Schema):
    id = fields.Integer()
    item_id = fields.String()
    coi_id = fields.String()
    site_code = fields.String()
    administered_at = fields.DateTime()
    verification_id = fields.Integer()
    warnings = fields.List(fields.Nested(ReasonSchema), attribute="warning_list")
    signature = fields.Dict()


def as_dict(obj: Any, **extra: Any) -> dict[str, Any]:
    """Attributes of a model row plus extra keys, for the read schemas."""
    data = {c.key: getattr(obj, c.key) for c in obj.__mapper__.column_attrs}
    data.update(extra)
    return data
