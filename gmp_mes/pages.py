"""Core pages: login, logout, dashboard shell and audit trail."""

from __future__ import annotations

import json
from typing import Any

from flask import (
    Blueprint,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from gmp_mes import accounts, audit
from gmp_mes.audit import Actor
from gmp_mes.audit_queries import search_events
from gmp_mes.clock import utcnow
from gmp_mes.edge import safe_next
from gmp_mes.errors import DomainError
from gmp_mes.http import csrf_token, current_user, db_session, roles_required, undo_failed_form
from gmp_mes.schemas import AuditQuerySchema

bp = Blueprint(
    "pages",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/core",
)


def add_nav(app: Any, endpoint: str, label: str, roles: tuple[str, ...] = ()) -> None:
    """Domains add their pages to the navigation bar, shown to the roles named."""
    app.extensions.setdefault("gmp_mes.nav", []).append((endpoint, label, roles))


def add_dashboard_panel(app: Any, panel: Any) -> None:
    """A panel is ``panel(session, user) -> (title, html) | None``."""
    app.extensions.setdefault("gmp_mes.panels", []).append(panel)


@bp.app_context_processor
def _navigation() -> dict[str, Any]:
    user = current_user()
    entries = current_app.extensions.get("gmp_mes.nav", [])
    visible = [
        (endpoint, label)
        for endpoint, label, roles in entries
        if user is not None and (not roles or user.has_role(*roles))
    ]
    return {"nav_entries": visible}


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    error = None
    if request.method == "POST":
        settings = current_app.config["GMP_SETTINGS"]
        s = db_session()
        try:
            user = accounts.authenticate(
                s,
                request.form.get("username", ""),
                request.form.get("password", ""),
                max_failed=settings.max_failed_logins,
            )
        except DomainError as exc:
            undo_failed_form(exc)
            error = exc.detail
        else:
            s.info["actor"] = Actor(user.username, user.id, user.full_name)
            session.clear()
            session["uid"] = user.id
            session["seen"] = utcnow().isoformat()
            csrf_token()
            return redirect(safe_next(request.args.get("next")) or url_for("pages.dashboard"))
    return render_template("login.html", error=error), (401 if error else 200)


# POST with CSRF only: a link, an image or another site cannot log a workstation out.
@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    session.clear()
    return redirect(url_for("pages.login"))


@bp.before_app_request
def _require_login_for_pages() -> Response | None:
    open_endpoints = {"pages.login", "pages.logout", "pages.static", "health.healthz"}
    if request.path.startswith("/api/") or request.endpoint in open_endpoints:
        return None
    if request.endpoint is None or current_user() is not None:
        return None
    return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))


@bp.route("/")
def dashboard() -> str:
    s = db_session()
    panels = []
    for panel in current_app.extensions.get("gmp_mes.panels", []):
        rendered = panel(s, g.user)
        if rendered is not None:
            panels.append(rendered)
    return render_template("dashboard.html", panels=panels)


@bp.route("/audit")
@roles_required("qa", "admin")
def audit_trail() -> str:
    query = AuditQuerySchema().load({k: v for k, v in request.args.items() if v}, unknown="exclude")
    events = search_events(db_session(), **query)
    rows = [(event, json.loads(event.record)) for event in events]
    anchor = audit.head(db_session().connection())
    return render_template("audit.html", rows=rows, query=query, anchor=anchor)
