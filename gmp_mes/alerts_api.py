"""Alerts API (SPEC §7): `GET /alerts` with filters, `POST /alerts/{id}/acknowledge`."""

from __future__ import annotations

from typing import Any

from flask import g
from flask_smorest import Blueprint
from marshmallow import RAISE, Schema, fields, validate

from gmp_mes import alerts
from gmp_mes.alerts import Alert, AlertStatus
from gmp_mes.http import db_session, roles_required
from gmp_mes.schemas import StrictSchema, Text

blp = Blueprint(
    "alerts_api",
    __name__,
    url_prefix="/api/v1",
    description="Alerts: expiry warnings, expired items, hold time, post-thaw limit, QC",
)


class AlertQuerySchema(StrictSchema):
    status = fields.String(
        load_default=None, validate=validate.OneOf([s.value for s in AlertStatus])
    )
    site = fields.String(load_default=None, validate=validate.Length(min=1, max=32))
    kind = fields.String(load_default=None, validate=validate.Length(min=1, max=40))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0))


class AcknowledgeSchema(StrictSchema):
    note = Text(load_default=None, multiline=True, validate=validate.Length(max=2000))


class AlertSchema(Schema):
    id = fields.Integer()
    cause = fields.String()
    kind = fields.String()
    severity = fields.String()
    subject_type = fields.String()
    subject_id = fields.String()
    message = fields.String()
    due_at = fields.DateTime(allow_none=True)
    site = fields.String(attribute="site_code", allow_none=True)
    roles = fields.List(fields.String(), attribute="role_list")
    status = fields.String()
    created_at = fields.DateTime()
    acknowledged_by = fields.Function(
        lambda a: a.acknowledger.username if a.acknowledger else None, allow_none=True
    )
    acknowledged_at = fields.DateTime(allow_none=True)
    acknowledge_note = fields.String(allow_none=True)


@blp.route("/alerts", methods=["GET"])
@blp.arguments(AlertQuerySchema, location="query", unknown=RAISE)
@blp.response(200, AlertSchema(many=True))
@roles_required()
def list_alerts(query: dict[str, Any]) -> list[Alert]:
    """Alerts addressed to the caller's roles and site (QA and admins: every site),
    newest first, filtered by status (open, acknowledged), site code and kind."""
    return alerts.list_alerts(db_session(), **query, viewer=g.user)


@blp.route("/alerts/<int:alert_id>", methods=["GET"])
@blp.response(200, AlertSchema)
@roles_required()
def get_alert(alert_id: int) -> Alert:
    """One alert addressed to the caller (404 otherwise)."""
    return alerts.get_alert(db_session(), alert_id, viewer=g.user)


@blp.route("/alerts/<int:alert_id>/acknowledge", methods=["POST"])
@blp.arguments(AcknowledgeSchema, required=False)
@blp.response(200, AlertSchema)
@roles_required()
def acknowledge_alert(body: dict[str, Any] | None, alert_id: int) -> Alert:
    """Acknowledge an open alert (who and when are recorded and audited); optional ``note``.
    403 when it is not addressed to the caller's roles and site; 409
    ``already_acknowledged`` when it was acknowledged before."""
    session = db_session()
    alert = alerts.acknowledge(session, alert_id, g.user, (body or {}).get("note"))
    session.refresh(alert)
    return alert
