"""Request and response shapes of the processes API (SPEC §7)."""

from __future__ import annotations

import json

from marshmallow import Schema, fields

from gmp_mes.schemas import SignatureOutSchema, SignatureSchema, StrictSchema

# --- input -------------------------------------------------------------------------------

class ApproveInSchema(StrictSchema):
    signature = fields.Nested(SignatureSchema, required=True)


# --- output ------------------------------------------------------------------------------

class ProcessSchema(Schema):
    code = fields.String()
    version = fields.Integer()
    name = fields.String()
    digest = fields.String()
    source = fields.String()
    loaded_at = fields.DateTime()
    approved = fields.Boolean()
    approved_at = fields.Function(lambda p: p.approval.approved_at.isoformat()
                                  if p.approval else None)
    approval_signature = fields.Function(
        lambda p: SignatureOutSchema().dump(p.approval.signature) if p.approval else None
    )


class ProcessDetailSchema(ProcessSchema):
    definition = fields.Function(lambda p: json.loads(p.definition))
