"""Pages of the training domain (SPEC §7b, §12): the training matrix (people of a site x
qualifications) with the grant and revoke forms (QA, admin), a person's history, and the
dashboard panel of qualifications running out within 30 days.

Views parse forms with schemas, call ``training.services`` and render; a refused form
re-renders with what was typed (never a password), the message at its field; a success
redirects (post/redirect/get).
"""

from __future__ import annotations

import re
from datetime import date, datetime

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from markupsafe import Markup
from marshmallow import ValidationError, fields, validate
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from gmp_mes.accounts import Principal, list_sites
from gmp_mes.clock import utcnow
from gmp_mes.errors import DomainError
from gmp_mes.http import db_session, form_refusal, roles_required
from gmp_mes.localtime import parse_local, zone_of
from gmp_mes.schemas import StrictSchema, field_errors, form_fields
from gmp_mes.signatures import SignatureInput
from training import services
from training.schemas import CODE_HELP

bp = Blueprint("training", __name__, template_folder="templates")

VIEW_ROLES = ("operator", "qa", "admin")
DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
GRANT_FIELDS = ("username", "code", "valid_until", "signature_reason")
REVOKE_FIELDS = ("revoke_username", "revoke_code", "reason")


class GrantFormSchema(StrictSchema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=64),
                             error_messages={"required": "choose the person"})
    code = fields.String(required=True, validate=validate.Length(min=1, max=48),
                         error_messages={"required": "name the qualification"})
    valid_until = fields.String(required=True, validate=validate.Length(min=1, max=40),
                                error_messages={"required": "until when it is valid"})
    password = fields.String(required=True, validate=validate.Length(min=1, max=200),
                             error_messages={"required": "type your password to sign"})
    signature_reason = fields.String(load_default=None, validate=validate.Length(max=2000))


class RevokeFormSchema(StrictSchema):
    revoke_username = fields.String(required=True, validate=validate.Length(min=1, max=64),
                                    error_messages={"required": "choose the person"})
    revoke_code = fields.String(required=True, validate=validate.Length(min=1, max=48),
                                error_messages={"required": "name the qualification"})
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000),
                           error_messages={"required": "state why it is revoked"})


def _site(session: Session) -> str:
    """The viewer's site; QA and admins, who oversee every site, may choose another."""
    wanted = (request.args.get("site") or request.form.get("site") or "").strip().upper()
    if (wanted and g.user.has_role("qa", "admin")
            and wanted in {site.code for site in list_sites(session)}):
        return wanted
    code: str = g.user.site.code
    return code


def _matrix(*, errors: dict[str, list[str]] | None = None, error: str | None = None,
            form: dict[str, str] | None = None, revoke_errors: dict[str, list[str]] | None = None,
            revoke_error: str | None = None, status: int = 200) -> str | tuple[str, int]:
    session = db_session()
    site = _site(session)
    matrix = services.training_matrix(session, site, utcnow())
    can_grant = g.user.has_role(*services.GRANT_ROLES)
    sites = [s.code for s in list_sites(session)] if g.user.has_role("qa", "admin") else []
    html = render_template(
        "training/matrix.html", matrix=matrix, can_grant=can_grant, sites=sites,
        errors=errors or {}, error=error, form=form or {}, revoke_errors=revoke_errors or {},
        revoke_error=revoke_error, code_help=CODE_HELP,
        soon_days=services.SOON.days)
    return (html, status) if status != 200 else html


@bp.route("/training")
@roles_required(*VIEW_ROLES)
def matrix() -> str | tuple[str, int]:
    return _matrix()


def _valid_until(text: str) -> datetime | date:
    """A date (valid through that day at the person's site) or a local date-time at the
    grantor's site (``datetime-local``); ValueError when unreadable."""
    text = text.strip()
    if DATE_ONLY.fullmatch(text):
        return date.fromisoformat(text)
    return parse_local(text, zone_of(g.user))


@bp.route("/training/grant", methods=["POST"])
@roles_required(*services.GRANT_ROLES)
def grant_form() -> str | Response | tuple[str, int]:
    form = {name: request.form.get(name, "") for name in GRANT_FIELDS}
    try:
        data = GrantFormSchema().load(
            {k: v for k, v in form_fields(request.form).items() if k != "site"})
    except ValidationError as exc:
        return _matrix(errors=field_errors(exc), form=form, status=422)
    try:
        valid_until = _valid_until(data["valid_until"])
    except ValueError:
        return _matrix(form=form, status=422, errors={
            "valid_until": ["a date (2027-06-30) or a date and time (2027-06-30T17:00)"]})
    try:
        record = services.grant_qualification(
            db_session(), data["username"], code=data["code"], valid_until=valid_until,
            user_id=g.user.id, signature=SignatureInput(
                password=data["password"], meaning="approved",
                reason=data["signature_reason"]))
    except DomainError as exc:
        errors, error = form_refusal(exc)
        if exc.status == 404:
            errors, error = {"username": [exc.detail]}, None
        return _matrix(errors=errors, error=error, form=form, status=exc.status)
    flash(f"{record.code} granted to {record.user.username}", "ok")
    return redirect(url_for("training.matrix", site=request.form.get("site") or None))


@bp.route("/training/revoke", methods=["POST"])
@roles_required(*services.GRANT_ROLES)
def revoke_form() -> str | Response | tuple[str, int]:
    form = {name: request.form.get(name, "") for name in REVOKE_FIELDS}
    try:
        data = RevokeFormSchema().load(
            {k: v for k, v in form_fields(request.form).items() if k != "site"})
    except ValidationError as exc:
        return _matrix(revoke_errors=field_errors(exc), form=form, status=422)
    try:
        revoked = services.revoke_qualification(
            db_session(), data["revoke_username"], data["revoke_code"], reason=data["reason"],
            user_id=g.user.id)
    except DomainError as exc:
        errors, error = form_refusal(exc)
        return _matrix(revoke_errors=errors, revoke_error=error, form=form, status=exc.status)
    flash(f"{revoked[0].code} of {revoked[0].user.username} revoked", "ok")
    return redirect(url_for("training.matrix", site=request.form.get("site") or None))


@bp.route("/training/people/<username>")
@roles_required(*VIEW_ROLES)
def person(username: str) -> str:
    """One person's training records, current and past (404 for an unknown user)."""
    person = services.qualifications_of(db_session(), username)
    if not g.user.has_role("qa", "admin") and person.user.site.code != g.user.site.code:
        abort(404)  # operators see the people of their own site, as on the matrix
    return render_template("training/person.html", person=person)


def dashboard_panel(session: Session, user: Principal) -> tuple[str, Markup] | None:
    """QA: qualifications held now that run out within 30 days (a renewal counts), soonest
    first; shown only when there are some."""
    if not user.has_role("qa", "admin"):
        return None
    expiring = services.expiring_within(session, utcnow())
    if not expiring:
        return None
    html = render_template("training/_panel.html", expiring=expiring)
    return f"Qualifications expiring within {services.SOON.days} days", Markup(html)
