"""Admin pages: users (list, create with roles and site, unlock, deactivate, password
reset, tokens and sessions) and sites (list, create). The rules live in
gmp_mes.accounts; these views parse the form, call the service and show its field
errors next to the fields.

21 CFR 11.100(a) / 11.300(b): user names are never deleted or reused, so there is no
delete: a person who leaves is deactivated, and the name stays listed.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

from gmp_mes import accounts, audit
from gmp_mes.errors import AlreadyExists, DomainError, NotFound, ValidationFailed
from gmp_mes.http import db_session, roles_required
from gmp_mes.models import DecimalSeparator, Role, SiteKind
from gmp_mes.registry import NavGroup, add_nav

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates")

MAX_REASON = 500


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    add_nav(app, "admin.users", "Users", ("admin",), group=NavGroup.ADMIN)
    add_nav(app, "admin.sites", "Sites", ("admin",), group=NavGroup.ADMIN)


def _errors_of(exc: DomainError, fallback: str) -> dict[str, list[str]]:
    """Field errors of a service error; anything else is shown at ``fallback``."""
    if isinstance(exc, ValidationFailed) and exc.errors:
        return {key: list(value) for key, value in exc.errors.items()}
    return {fallback: [exc.detail]}


# --- users ------------------------------------------------------------------------------


@bp.route("/users")
@roles_required("admin")
def users() -> str:
    return render_template("admin/users.html", users=accounts.list_users(db_session()),
                           max_failed=current_app.config["GMP_SETTINGS"].max_failed_logins)


@bp.route("/users/new", methods=["GET", "POST"])
@roles_required("admin")
def new_user() -> str | Response | tuple[str, int]:
    s = db_session()
    sites = accounts.list_sites(s)
    form: dict[str, Any] = {"roles": []}
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        form = {
            "username": request.form.get("username", "").strip(),
            "full_name": request.form.get("full_name", "").strip(),
            "email": request.form.get("email", "").strip(),
            "site": request.form.get("site", "").strip(),
            "roles": request.form.getlist("roles"),
        }
        password = request.form.get("password", "")
        if password != request.form.get("password_confirm", ""):
            errors["password_confirm"] = ["the two passwords differ"]
        if not form["full_name"]:
            errors["full_name"] = ["the printed name on signatures must not be empty"]
        if not form["site"]:
            errors["site"] = ["choose the user's site"]
        if not errors:
            try:
                user = accounts.create_user(
                    s,
                    form["username"],
                    password=password,
                    roles=form["roles"],
                    site_code=form["site"],
                    full_name=form["full_name"],
                    email=form["email"] or None,
                    must_change=True,  # 21 CFR 11.300(b): the admin's choice is one-time
                )
            except NotFound as exc:
                s.rollback()
                errors = {"site": [exc.detail]}
            except AlreadyExists as exc:
                s.rollback()
                errors = {"username": [exc.detail]}
            except ValidationFailed as exc:
                s.rollback()
                errors = _errors_of(exc, "username")
            else:
                flash(
                    f"User {user.username} created ({', '.join(sorted(user.roles))} "
                    f"at {user.site.code}).",
                    "ok",
                )
                return redirect(url_for("admin.users"))
    status = 422 if errors else 200
    return render_template(
        "admin/user_new.html",
        form=form,
        errors=errors,
        sites=sites,
        roles=[r.value for r in Role],
    ), status


def _account_action(username: str, action: str) -> Response:
    reason = request.form.get("reason", "").strip()[:MAX_REASON] or None
    s = db_session()
    try:
        with audit.reason(s, reason):
            if action == "unlock":
                accounts.unlock_user(s, username)
            else:
                accounts.deactivate_user(s, username, by_user_id=g.user.id)
    except DomainError as exc:
        s.rollback()
        flash(f"Not done: {exc.detail}", "error")
    else:
        flash(f"User {username} {'unlocked' if action == 'unlock' else 'deactivated'}.", "ok")
    return redirect(url_for("admin.users"))


@bp.route("/users/<username>/email", methods=["POST"])
@roles_required("admin")
def set_email(username: str) -> Response:
    s = db_session()
    try:
        user = accounts.set_email(s, username, request.form.get("email"))
    except DomainError as exc:
        s.rollback()
        problems = [m for messages in (exc.errors or {}).values() for m in messages]
        flash(f"Not changed: {'; '.join([exc.detail, *problems])}", "error")
    else:
        where = user.email or "nowhere (address removed)"
        flash(f"Alert e-mails for {username} now go to {where}.", "ok")
    return redirect(url_for("admin.users"))


@bp.route("/users/<username>/unlock", methods=["POST"])
@roles_required("admin")
def unlock_user(username: str) -> Response:
    return _account_action(username, "unlock")


@bp.route("/users/<username>/deactivate", methods=["POST"])
@roles_required("admin")
def deactivate_user(username: str) -> Response:
    return _account_action(username, "deactivate")


@bp.route("/users/<username>/password-reset", methods=["POST"])
@roles_required("admin")
def reset_password(username: str) -> str | Response:
    """A one-time password, shown on this page only (never in a flash: that travels in
    the cookie) and never stored in clear; the person must change it at first login."""
    s = db_session()
    try:
        user, password = accounts.reset_password(s, username, by_user_id=g.user.id)
    except DomainError as exc:
        s.rollback()
        flash(f"Not reset: {exc.detail}", "error")
        return redirect(url_for("admin.users"))
    response = make_response(
        render_template("admin/password_reset.html", user=user, password=password)
    )
    response.headers["Cache-Control"] = "no-store"  # the password must not stay in a cache
    return response


@bp.route("/users/<username>/tokens")
@roles_required("admin")
def tokens(username: str) -> str:
    s = db_session()
    return render_template("admin/tokens.html", user=accounts.get_user(s, username),
                           tokens=accounts.list_credentials(s, username))


@bp.route("/users/<username>/tokens/<int:token_id>/revoke", methods=["POST"])
@roles_required("admin")
def revoke_token(username: str, token_id: int) -> Response:
    reason = request.form.get("reason", "").strip()[:200] or "revoked by an administrator"
    s = db_session()
    try:
        accounts.revoke_credential(s, username, token_id, reason)
    except DomainError as exc:
        s.rollback()
        flash(f"Not revoked: {exc.detail}", "error")
    else:
        flash(f"Token or session {token_id} of {username} ended.", "ok")
    return redirect(url_for("admin.tokens", username=username))


# --- sites ------------------------------------------------------------------------------


@bp.route("/sites", methods=["GET", "POST"])
@roles_required("admin")
def sites() -> str | Response | tuple[str, int]:
    s = db_session()
    default_zone = current_app.config["GMP_SETTINGS"].timezone
    form: dict[str, str] = {"timezone": default_zone}
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        form = {
            key: request.form.get(key, "").strip()
            for key in ("code", "kind", "name", "timezone", "decimal_separator")
        }
        try:
            site = accounts.create_site(
                s,
                form["code"],
                kind=form["kind"],
                name=form["name"],
                timezone=form["timezone"] or default_zone,
                decimal_separator=form["decimal_separator"] or DecimalSeparator.POINT.value,
            )
        except AlreadyExists as exc:
            s.rollback()
            errors = {"code": [exc.detail]}
        except ValidationFailed as exc:
            s.rollback()
            errors = _errors_of(exc, "code")
        else:
            flash(f"Site {site.code} created ({site.kind}).", "ok")
            return redirect(url_for("admin.sites"))
    return render_template(
        "admin/sites.html",
        sites=accounts.list_sites(s),
        form=form,
        errors=errors,
        kinds=[k.value for k in SiteKind],
        separators=SEPARATOR_NAMES,
    ), (422 if errors else 200)


SEPARATOR_NAMES = {DecimalSeparator.POINT.value: "decimal point (1.5)",
                   DecimalSeparator.COMMA.value: "decimal comma (1,5)"}


@bp.route("/sites/<code>/decimal-separator", methods=["POST"])
@roles_required("admin")
def site_decimal_separator(code: str) -> Response:
    """How the site's people write decimals in page forms (the point is always taken)."""
    s = db_session()
    try:
        site = accounts.set_decimal_separator(s, code, request.form.get("decimal_separator", ""))
    except DomainError as exc:
        s.rollback()
        flash(f"Not changed: {exc.detail}", "error")
    else:
        flash(f"Site {site.code} writes decimals with a "
              f"{SEPARATOR_NAMES[site.decimal_separator]}.", "ok")
    return redirect(url_for("admin.sites"))
