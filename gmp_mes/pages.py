"""Core pages: login, logout, password change, dashboard shell and audit trail."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from flask import (
    Blueprint,
    current_app,
    flash,
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
from gmp_mes.errors import DomainError, PasswordChangeRequired, RateLimited, ValidationFailed
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
def login() -> str | Response | tuple[str, int, dict[str, str]]:
    error = None
    status, headers = 200, {}
    if request.method == "POST":
        settings = current_app.config["GMP_SETTINGS"]
        s = db_session()
        username = request.form.get("username", "")
        target = request.args.get("next", "")
        try:
            user = accounts.authenticate(s, username, request.form.get("password", ""))
        except PasswordChangeRequired as exc:
            # 21 CFR 11.300(b): a one-time or expired password gives no session: the
            # person sets their own first, proving the one they have.
            s.rollback()
            _end_previous_session(s, "another person logged in on this browser")
            flash(f"Change your password before you continue: {exc.detail.split(':')[0]}.",
                  "error")
            return redirect(url_for("pages.change_password", username=username.strip().lower(),
                                    next=target or None))
        except DomainError as exc:
            undo_failed_form(exc)
            error, status, headers = exc.detail, exc.status, exc.headers
        else:
            s.info["actor"] = Actor(user.username, user.id, user.full_name)
            # Annex 11 §12: the session lives on the server (revocable, absolute lifetime);
            # the cookie carries only its secret and the idle timeout.
            _end_previous_session(s, "replaced by a new login")
            secret = accounts.start_session(
                s, user, timedelta(minutes=settings.session_max_minutes)
            )
            session.clear()
            session["sid"] = secret
            session["seen"] = utcnow().isoformat()
            csrf_token()
            return redirect(safe_next(target) or url_for("pages.dashboard"))
    max_failed = current_app.config["GMP_SETTINGS"].max_failed_logins
    return render_template("login.html", error=error, max_failed=max_failed), status, headers


def _end_previous_session(s: Any, reason: str) -> None:
    """A correct password typed on this browser ends the session it still carries (the
    person before, on a shared workstation), on the server and in the cookie."""
    previous = session.get("sid")
    if previous:
        if s.info.get("actor") is None:
            s.info["actor"] = Actor.system("login")
        accounts.revoke_secret(s, str(previous), reason)
        session.clear()


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> str | Response:
    """POST (with the CSRF token) ends the session on the server, so a copied cookie is
    worthless afterwards; GET only shows the button (a link must not log anyone out)."""
    if request.method == "GET":
        return render_template("logout.html")
    secret = session.get("sid")
    if secret and current_user() is not None:
        accounts.revoke_secret(db_session(), str(secret), "logout")
    session.clear()
    return redirect(url_for("pages.login"))


@bp.route("/account/password", methods=["GET", "POST"])
def change_password() -> str | Response | tuple[str, int, dict[str, str]]:
    """Change one's own password (21 CFR 11.300(b)); also where a login with a one-time
    or expired password is sent. The current password proves who is asking."""
    user = current_user()
    username = user.username if user else (
        request.form.get("username") or request.args.get("username") or "").strip().lower()
    errors: dict[str, list[str]] = {}
    status, headers = 200, {}
    if request.method == "POST":
        new = request.form.get("new_password", "")
        if new != request.form.get("new_password_confirm", ""):
            errors["new_password_confirm"] = ["the two new passwords differ"]
        else:
            s = db_session()
            try:
                accounts.change_password(
                    s, username, request.form.get("current_password", ""), new
                )
            except ValidationFailed as exc:
                undo_failed_form(exc)
                errors = {k: list(v) for k, v in (exc.errors or {}).items()}
            except DomainError as exc:
                undo_failed_form(exc)
                errors = {"current_password": [exc.detail]}
                if isinstance(exc, RateLimited):
                    headers = exc.headers
                status = exc.status
            else:
                # Every session of the person ended with the change, this one too.
                target = request.args.get("next", "")
                session.clear()
                flash("Password changed. Log in with the new password.", "ok")
                return redirect(url_for("pages.login", next=target or None))
        status = status if status != 200 else 422
    return render_template(
        "account_password.html", username=username, fixed=user is not None, errors=errors,
        min_length=accounts.policy(db_session()).password_min_length,
    ), status, headers


@bp.before_app_request
def _require_login_for_pages() -> Response | None:
    open_endpoints = {"pages.login", "pages.logout", "pages.change_password", "pages.static",
                      "health.healthz"}
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
