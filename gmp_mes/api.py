"""Core API: tokens, users, sites, audit trail, health."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from flask import Blueprint, current_app, g, request
from flask_smorest import Blueprint as ApiBlueprint
from marshmallow import fields
from sqlalchemy import select, text

from gmp_mes import accounts, audit, deadline, idempotency
from gmp_mes.audit import Actor
from gmp_mes.audit_queries import search_events
from gmp_mes.clock import utcnow
from gmp_mes.errors import Unauthenticated
from gmp_mes.http import database, db_session, roles_required
from gmp_mes.models import ApiToken, AuditEvent, Site, User
from gmp_mes.schemas import (
    AuditEventSchema,
    AuditHeadSchema,
    AuditQuerySchema,
    CredentialSchema,
    EmailInSchema,
    PasswordChangeSchema,
    PasswordResetSchema,
    RevokeSchema,
    SiteInSchema,
    SiteSchema,
    TokenRequestSchema,
    TokenSchema,
    UserInSchema,
    UserSchema,
)

blp = ApiBlueprint("core", __name__, url_prefix="/api/v1", description="Accounts and audit trail")
health = Blueprint("health", __name__)


class AuditEventOutSchema(AuditEventSchema):
    record = fields.Function(lambda e: json.loads(e.record))


@blp.route("/auth/tokens", methods=["POST"])
@blp.arguments(TokenRequestSchema)
@blp.response(201, TokenSchema)
@blp.doc(security=[])
def create_token(body: dict[str, Any]) -> dict[str, Any]:
    """Exchange user name and password for a bearer token."""
    settings = current_app.config["GMP_SETTINGS"]
    session = db_session()
    user = accounts.authenticate(session, body["username"], body["password"])
    session.info["actor"] = Actor(user.username, user.id, user.full_name)
    token, expires_at = accounts.issue_token(
        session, user, timedelta(minutes=settings.token_ttl_minutes)
    )
    return {"token": token, "expires_at": expires_at}


@blp.route("/auth/tokens/current", methods=["DELETE"])
@blp.response(204)
@roles_required()
def revoke_current_token() -> None:
    """Revoke the bearer token this request was sent with (logout of a device)."""
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer "):
        raise Unauthenticated("only a bearer token can be revoked here; pages log out")
    accounts.revoke_secret(db_session(), header[7:].strip(), "revoked by its holder")


@blp.route("/auth/password", methods=["POST"])
@blp.arguments(PasswordChangeSchema)
@blp.response(200, UserSchema)
@blp.doc(security=[])
def change_password(body: dict[str, Any]) -> User:
    """Change a password with the current one (a one-time password too). Policy
    refusals are 422 with ``errors.new_password``; every token and session of the
    user ends. Failed current passwords count toward lockout and the rate limits."""
    return accounts.change_password(
        db_session(), body["username"], body["current_password"], body["new_password"]
    )


@blp.route("/me", methods=["GET"])
@blp.response(200, UserSchema)
@roles_required()
def me() -> User:
    """The authenticated user."""
    return db_session().get_one(User, g.user.id)


@blp.route("/users", methods=["GET"])
@blp.response(200, UserSchema(many=True))
@roles_required("admin")
def list_users() -> list[User]:
    """All users, active and deactivated (names are never reused)."""
    return list(db_session().scalars(select(User).order_by(User.username)))


@blp.route("/users", methods=["POST"])
@blp.arguments(UserInSchema)
@blp.response(201, UserSchema)
@roles_required("admin")
def create_user(body: dict[str, Any]) -> User:
    """Create a user bound to a site, with one or more roles."""
    # 21 CFR 11.300(b): a password the administrator chose is one-time.
    return accounts.create_user(
        db_session(),
        body["username"],
        password=body["password"],
        roles=body["roles"],
        site_code=body["site"],
        full_name=body["full_name"],
        email=body["email"],
        must_change=True,
    )


@blp.route("/users/<username>/password-reset", methods=["POST"])
@blp.response(201, PasswordResetSchema)
@roles_required("admin")
def reset_password(username: str) -> dict[str, Any]:
    """A one-time password for the user (shown once); it must be changed before it
    gives a token or a session. Every token and session of the user ends."""
    user, password = accounts.reset_password(db_session(), username, by_user_id=g.user.id)
    idempotency.answer_holds_a_secret()
    return {"username": user.username, "one_time_password": password,
            "must_change_password": True}


@blp.route("/users/<username>/tokens", methods=["GET"])
@blp.response(200, CredentialSchema(many=True))
@roles_required("admin")
def list_tokens(username: str) -> list[ApiToken]:
    """The user's bearer tokens and page sessions, newest first (never the secrets)."""
    return accounts.list_credentials(db_session(), username)


@blp.route("/users/<username>/tokens/<int:token_id>", methods=["DELETE"])
@blp.arguments(RevokeSchema, required=False)
@blp.response(200, CredentialSchema)
@roles_required("admin")
def revoke_token(body: dict[str, Any] | None, username: str, token_id: int) -> ApiToken:
    """End one token or session of the user at once."""
    reason = (body or {}).get("reason") or "revoked by an administrator"
    return accounts.revoke_credential(db_session(), username, token_id, reason)


@blp.route("/users/<username>/unlock", methods=["POST"])
@blp.response(200, UserSchema)
@roles_required("admin")
def unlock_user(username: str) -> User:
    """Unlock an account locked by failed logins."""
    return accounts.unlock_user(db_session(), username)


@blp.route("/users/<username>/email", methods=["POST"])
@blp.arguments(EmailInSchema)
@blp.response(200, UserSchema)
@roles_required("admin")
def set_email(body: dict[str, Any], username: str) -> User:
    """Change or remove the address the user's alert e-mails go to (audited, old and new)."""
    return accounts.set_email(db_session(), username, body["email"])


@blp.route("/users/<username>/deactivate", methods=["POST"])
@blp.response(200, UserSchema)
@roles_required("admin")
def deactivate_user(username: str) -> User:
    """Deactivate a user; the name stays reserved forever."""
    return accounts.deactivate_user(db_session(), username, by_user_id=g.user.id)


@blp.route("/sites", methods=["GET"])
@blp.response(200, SiteSchema(many=True))
@roles_required()
def list_sites() -> list[Site]:
    """Collection, manufacturing and treatment sites."""
    return list(db_session().scalars(select(Site).order_by(Site.code)))


@blp.route("/sites", methods=["POST"])
@blp.arguments(SiteInSchema)
@blp.response(201, SiteSchema)
@roles_required("admin")
def create_site(body: dict[str, Any]) -> Site:
    """Create a site."""
    return accounts.create_site(db_session(), body.pop("code"), **body)


@blp.route("/audit", methods=["GET"])
@blp.arguments(AuditQuerySchema, location="query")
@blp.response(200, AuditEventOutSchema(many=True))
@roles_required("qa", "admin")
def list_audit(query: dict[str, Any]) -> list[AuditEvent]:
    """Audit events, newest first, filtered by record, user and time."""
    return search_events(db_session(), **query)


@blp.route("/audit/head", methods=["GET"])
@blp.response(200, AuditHeadSchema)
@roles_required("qa", "admin")
def audit_head() -> dict[str, Any]:
    """The chain's head as an anchor, for a system outside (SIEM, LIMS, archive) to keep:
    `gmp-mes audit verify --anchor SEQ:HASH` later proves nothing up to it was removed."""
    anchor = audit.head(db_session().connection())
    return {
        "anchor": str(anchor) if anchor else None,
        "seq": anchor.seq if anchor else 0,
        "hash": anchor.hash if anchor else None,
        "at": utcnow(),
    }


@health.route("/healthz")
def healthz() -> tuple[dict[str, Any], int]:
    """Liveness and database reachability, for load balancers."""
    bound = current_app.config["GMP_SETTINGS"].health_timeout
    try:
        with deadline.budget(bound), database().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any driver failure means "not healthy", reported, not raised
        return {"status": "unhealthy", "database": f"unreachable: {type(exc).__name__}"}, 503
    return {"status": "ok", "database": "reachable"}, 200
