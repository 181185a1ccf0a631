"""The request's context, below the HTTP edge: its database session, its caller and
problem+json answers. :mod:`gmp_mes.http` re-exports these (views import them from there);
:mod:`gmp_mes.idempotency` builds on this module, and the edge on both."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request, session
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from gmp_mes import accounts
from gmp_mes.accounts import Principal
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.db import Database

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PROBLEM_JSON = "application/problem+json"


def database(app: Flask | None = None) -> Database:
    return (app or current_app).extensions["gmp_mes.db"]


def db_session() -> Session:
    """The request's session; writers (and GETs marked ``writes``) lock early on SQLite."""
    if "db_session" not in g:
        write = request.method not in SAFE_METHODS or g.get("writes", False)
        s = database().session(write=write)
        user = g.get("user")
        s.info["actor"] = (
            Actor(user.username, user.id, user.full_name) if user is not None else None
        )
        s.info["client"] = request.remote_addr  # failed-password rate limits per client
        g.db_session = s
    return g.db_session


def current_user() -> Principal | None:
    if "user" in g:
        return g.user
    g.user = _load_user()
    return g.user


def _load_user() -> Principal | None:
    """The caller, looked up with one Core query (see :func:`_lookup_connection`).

    The Principal is an immutable snapshot for authorisation that also survives the
    rollback of a failed request (error pages still show who is logged in). Nothing is
    cached across requests: deactivation, lockout and token expiry act at once.
    """
    header = request.headers.get("Authorization", "")
    bearer = header.lower().startswith("bearer ")
    if bearer:
        with _lookup_connection() as c:
            user = accounts.principal_for_token(c, header[7:].strip())
    elif "sid" in session and not request.path.startswith("/api/"):
        user = _session_user()
    else:
        return None
    if user is not None and "db_session" in g:
        g.db_session.info["actor"] = Actor(user.username, user.id, user.full_name)
    return user


@contextmanager
def _lookup_connection() -> Iterator[Connection]:
    """Where the caller is looked up. On PostgreSQL, the request's own transaction: no
    second pool checkout, ping, BEGIN and ROLLBACK. On SQLite, a short read connection
    of its own, so that the write lock (BEGIN IMMEDIATE) is held only for the work."""
    db = database()
    if db.dialect == "postgresql":
        yield db_session().connection()
        return
    with db.single_read() as connection:
        yield connection


def _session_user() -> Principal | None:
    """The user of the cookie's server-side session (revocable, with an absolute
    lifetime), while the cookie's own idle timeout has not run out (Annex 11 §12)."""
    settings = current_app.config["GMP_SETTINGS"]
    seen = session.get("seen")
    if seen is None or utcnow() - datetime.fromisoformat(seen) > timedelta(
        minutes=settings.session_ttl_minutes
    ):
        session.clear()
        return None
    with _lookup_connection() as c:
        user = accounts.principal_for_session(c, str(session["sid"]))
    if user is None:
        session.clear()
        return None
    session["seen"] = utcnow().isoformat()
    return user


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    errors: dict[str, list[str]] | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": f"https://gmp-mes.org/problems/{code.replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    body.update(extra or {})
    response = jsonify(body)
    response.status_code = status
    response.content_type = PROBLEM_JSON
    for key, value in (headers or {}).items():
        response.headers[key] = value
    if status == 401:
        response.headers.setdefault("WWW-Authenticate", 'Bearer realm="gmp-mes"')
    return response
