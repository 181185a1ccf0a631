"""Core pages: login, logout, password change, dashboard shell and audit trail."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
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
    stream_with_context,
    url_for,
)
from werkzeug.wrappers import Response

from gmp_mes import accounts, audit, localtime, registry
from gmp_mes.audit import Actor
from gmp_mes.audit_queries import (
    changes_of,
    has_newer,
    record_export,
    search_events,
    stream_events,
)
from gmp_mes.clock import utcnow
from gmp_mes.edge import safe_next
from gmp_mes.errors import DomainError, PasswordChangeRequired, RateLimited, ValidationFailed
from gmp_mes.http import (
    commit_unit_of_work,
    csrf_token,
    current_user,
    database,
    db_session,
    roles_required,
    undo_failed_form,
    writes,
)
from gmp_mes.schemas import number_example

bp = Blueprint(
    "pages",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/core",
)


@bp.app_template_filter("site_time")
def site_time(value: Any) -> str:
    """A stored UTC time at the logged-in user's site, with the zone (SPEC §9)."""
    return localtime.local(value, localtime.zone_of(current_user()))


# What a status means for the person looking at it (issue 15): red for stop states
# (never use), amber for waiting states (quarantine, conditional, on hold, pending),
# green only for what may be used; grey for finished records.
STOP_STATUSES = frozenset({"rejected", "expired", "blocked", "destroyed", "failed",
                           "recalled", "out_of_service", "calibration_overdue"})
WAIT_STATUSES = frozenset({"quarantine", "conditionally_released", "on_hold", "pending",
                           "awaiting_release", "shipped", "in_transit", "open", "required"})
DONE_STATUSES = frozenset({"administered", "consumed", "closed", "acknowledged"})


@bp.app_template_filter("signed_line")
def signed_line(signature: Any) -> str:
    """A signature's manifestation at the reader's site time (SPEC §9, 21 CFR 11.50)."""
    return localtime.signature_line(signature, localtime.zone_of(current_user()))


@bp.app_template_filter("status_tone")
def status_tone(status: str | None) -> str:
    """The badge class of a status: stop, warn, done or ok."""
    value = (status or "").lower()
    if value in STOP_STATUSES:
        return "stop"
    if value in WAIT_STATUSES:
        return "warn"
    if value in DONE_STATUSES:
        return "done"
    return "ok"


@bp.app_template_filter("words")
def words(code: str | None) -> str:
    """A code as people read it: conditionally_released -> conditionally released."""
    return (code or "").replace("_", " ")


@bp.app_context_processor
def _navigation() -> dict[str, Any]:
    user = current_user()
    visible = [
        (entry.endpoint, entry.label)
        for entry in registry.navigation(current_app)
        if user is not None and (not entry.roles or user.has_role(*entry.roles))
    ]
    # Number inputs show an example as the user's site writes decimals (issue 15).
    separator = user.site.decimal_separator if user is not None else "."
    return {"nav_entries": visible, "decimal_separator": separator,
            "number_example": lambda example="1.5": number_example(separator, example)}


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
    for panel in registry.of(current_app).panels:
        rendered = panel(s, g.user)
        if rendered is not None:
            panels.append(rendered)
    return render_template("dashboard.html", panels=panels)


AUDIT_PAGE_SIZE = 100
AUDIT_TEXT_FILTERS = ("entity_type", "entity_id", "username", "action")


def _audit_filters(args: Any, tz: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The audit page's and the CSV export's filters: record type and id, user, action,
    and a time window typed at the site's local time (or ISO with an offset)."""
    filters: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name in AUDIT_TEXT_FILTERS:
        value = (args.get(name) or "").strip()
        if len(value) > 200:
            errors[name] = ["at most 200 characters"]
        elif value:
            filters[name] = value
    for name in ("since", "until"):
        value = (args.get(name) or "").strip()
        if not value:
            continue
        try:
            filters[name] = localtime.parse_local(value, tz)
        except ValueError:
            errors[name] = ["not a date and time (for example 2026-12-01T09:30)"]
    return filters, errors


def _seq(args: Any, name: str) -> int | None:
    raw = (args.get(name) or "").strip()
    return int(raw) if raw.isdigit() and 0 < int(raw) < 2**62 else None


@bp.route("/audit")
@roles_required("qa", "admin")
def audit_trail() -> str | tuple[str, int]:
    """Every event, newest first, paged by key on ``seq`` (``before``: older events,
    ``after``: newer ones), with the filters of the CSV export (SPEC §7b)."""
    s = db_session()
    tz = localtime.zone_of(g.user)
    filters, errors = _audit_filters(request.args, tz)
    before, after = _seq(request.args, "before"), _seq(request.args, "after")
    events = [] if errors else search_events(
        s, limit=AUDIT_PAGE_SIZE + 1, before=before, after=after, **filters)
    if after is not None:
        # Newer page: one row too many at the old end means nothing.
        events = events[-AUDIT_PAGE_SIZE:] if len(events) > AUDIT_PAGE_SIZE else events
        older = True
    else:
        older = len(events) > AUDIT_PAGE_SIZE
        events = events[:AUDIT_PAGE_SIZE]
    newer = bool(events) and has_newer(s, events[0].seq, **filters)
    rows = [(event, record, changes_of(record))
            for event in events for record in (json.loads(event.record),)]
    anchor = audit.head(s.connection())
    shown = {k: (request.args.get(k) or "").strip() for k in (*AUDIT_TEXT_FILTERS, "since",
                                                               "until")}
    links: dict[str, Any] = {k: v for k, v in shown.items() if v}  # url_for's **values
    page = render_template(
        "audit.html", rows=rows, filters=shown, errors=errors, anchor=anchor,
        zone=tz.key, local=lambda value: localtime.local(value, tz, seconds=True),
        older_url=url_for("pages.audit_trail", **links, before=events[-1].seq)
        if older and events else None,
        newer_url=url_for("pages.audit_trail", **links, after=events[0].seq)
        if newer else None,
        newest_url=url_for("pages.audit_trail", **links) if newer else None,
        csv_url=url_for("pages.audit_csv", **links),
    )
    return (page, 422) if errors else page


CSV_COLUMNS = ("seq", "time_local", "time_utc", "username", "action", "record_type",
               "record_id", "reason", "changes", "hash")


def _cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run: a leading = + - @ (or tab, CR) is a
    formula to Excel and LibreOffice (OWASP "CSV injection"), so it is quoted with '."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@bp.route("/audit.csv")
@roles_required("qa", "admin")
@writes
def audit_csv() -> Response | tuple[str, int]:
    """The audit trail with the page's filters as CSV, streamed (every event, no page
    limit): local time with the zone for people, UTC for machines."""
    tz = localtime.zone_of(g.user)
    filters, errors = _audit_filters(request.args, tz)
    if errors:
        return "; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()), 422
    # The export is recorded (who, when, which filters) and committed before the first
    # row streams: no lock is held while the file is read, and no export goes unrecorded.
    record_export(db_session(), filters)
    commit_unit_of_work()
    db = database()

    def lines() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        with db.single_read() as connection:
            for seq, text, hash_ in stream_events(connection, **filters):
                record = json.loads(text)
                change = "; ".join(
                    f"{field}: {old} → {new}" if old is not None else f"{field}: {new}"
                    for field, old, new in changes_of(record))
                writer.writerow([_cell(v) for v in (
                    seq, localtime.local(record.get("at"), tz, seconds=True),
                    record.get("at"), record.get("username"), record.get("action"),
                    record.get("entity_type"), record.get("entity_id"),
                    record.get("reason"), change, hash_)])
                if out.tell() > 64_000:
                    yield out.getvalue()
                    out.seek(0)
                    out.truncate()
        yield out.getvalue()

    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return Response(stream_with_context(lines()), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'})


# --- global search ------------------------------------------------------------------------

@bp.route("/search")
@roles_required()
def search() -> Response | tuple[str, int]:
    """The header's search box: an item, batch or COI id, or a scanned label, opens its
    page; anything else is looked up in the patient list (what the user may see)."""
    text = (request.args.get("q") or "").strip()
    if not text:
        return redirect(url_for("pages.dashboard"))
    if len(text) > 1000:
        return render_template("search.html", q=text[:100], error="too long to be an id"), 422
    s = db_session()
    for resolver in registry.of(current_app).search:
        try:
            target = resolver(s, g.user, text)
        except DomainError as exc:
            undo_failed_form(exc)
            return render_template("search.html", q=text[:100], error=exc.detail), exc.status
        if target:
            return redirect(target)
    return render_template("search.html", q=text[:100], error=None), 404
