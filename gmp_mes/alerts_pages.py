"""Alerts pages: the /alerts list with filters and acknowledgement, and the dashboard
panels "Open alerts" and "Expiring soon" (SPEC §7b)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from markupsafe import Markup
from marshmallow import ValidationError
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from gmp_mes import alerts, paging
from gmp_mes.accounts import Principal
from gmp_mes.alerts_api import AcknowledgeSchema, AlertQuerySchema
from gmp_mes.clock import utcnow
from gmp_mes.errors import DomainError, Unauthenticated
from gmp_mes.http import current_user, db_session
from gmp_mes.registry import NavGroup, add_dashboard_panel, add_nav

bp = Blueprint("alerts", __name__, template_folder="templates")
FILTERS = ("status", "site", "kind")


def _user() -> Principal:
    user = current_user()
    if user is None:  # unreachable behind the login redirect; never act anonymously
        raise Unauthenticated("log in first")
    return user


def local_time(user: Principal) -> Any:
    """Format aware UTC times in the user's site time zone (pages show local time)."""
    zone = ZoneInfo(user.site.timezone or "UTC")

    def render(value: datetime | None) -> str:
        if value is None:
            return ""
        return value.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")

    return render


# No role decorator: every page requires a login already (gmp_mes.pages redirects
# anonymous visitors to the login page), and every role sees the alerts addressed to it.
@bp.route("/alerts")
def alerts_page() -> str | tuple[str, int]:
    raw = {k: v for k, v in request.args.items() if k in FILTERS}
    raw.setdefault("status", "open")
    raw = {k: v for k, v in raw.items() if v}
    errors: dict[str, list[str]] = {}
    try:
        query = AlertQuerySchema().load(raw)
    except ValidationError as exc:
        errors = {k: list(v) for k, v in exc.normalized_messages().items()}
        query = {}
    number, size = paging.requested(request.args)
    query = {k: v for k, v in query.items() if k not in ("limit", "offset")}
    rows = alerts.list_alerts(db_session(), **query, viewer=_user(), limit=size + 1,
                              offset=(number - 1) * size) if not errors else []
    rows, page = paging.cut(rows, number, size)
    return render_template(
        "alerts.html",
        rows=rows,
        page=page,
        filters=raw,
        errors=errors,
        local=local_time(_user()),
        countdown=alerts.countdown,
        statuses=[s.value for s in alerts.AlertStatus],
    ), (422 if errors else 200)


@bp.route("/alerts/<int:alert_id>/acknowledge", methods=["POST"])
def acknowledge_page(alert_id: int) -> Response:
    form = {k: request.form.get(f"back_{k}", "") for k in FILTERS}
    back: dict[str, Any] = {k: v for k, v in form.items() if v}  # url_for's **values
    session = db_session()
    try:
        body = AcknowledgeSchema().load({"note": request.form.get("note") or None})
        alerts.acknowledge(session, alert_id, _user(), body["note"])
    except ValidationError as exc:
        session.rollback()
        flash(f"Not acknowledged: {exc.normalized_messages()}", "error")
    except DomainError as exc:
        session.rollback()
        flash(f"Not acknowledged: {exc.detail}", "error")
    else:
        flash(f"Alert {alert_id} acknowledged.", "ok")
    return redirect(url_for("alerts.alerts_page", **back))


def open_alerts_panel(session: Session, user: Principal) -> tuple[str, Markup] | None:
    total, rows = alerts.alerts_for_user(session, user.roles, user.site.code, limit=8)
    html = render_template(
        "alerts_panel_open.html",
        total=total,
        rows=rows,
        local=local_time(user),
    )
    return (f"Open alerts ({total})", Markup(html))


def expiring_soon_panel(session: Session, user: Principal) -> tuple[str, Markup] | None:
    rows = alerts.expiring_soon(session, user.roles, user.site.code, limit=8)
    html = render_template(
        "alerts_panel_expiring.html",
        rows=rows,
        now=utcnow(),
        countdown=alerts.countdown,
        local=local_time(user),
    )
    return ("Expiring soon (countdown)", Markup(html))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    add_nav(app, "alerts.alerts_page", "Alerts", group=NavGroup.ALERTS)
    add_dashboard_panel(app, open_alerts_panel)
    add_dashboard_panel(app, expiring_soon_panel)
