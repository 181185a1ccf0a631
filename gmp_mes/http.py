"""The HTTP edge: request-scoped session, commit boundary, authentication,
role checks, CSRF and problem+json rendering (RFC 9457)."""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import (
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, StatementError
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from gmp_mes import edge, idempotency, signatures
from gmp_mes.audit import Actor
from gmp_mes.context import PROBLEM_JSON as PROBLEM_JSON  # re-exported: the edge's media type
from gmp_mes.context import (
    SAFE_METHODS,
    _lookup_connection,
    current_user,
    database,
    db_session,
    problem,
)
from gmp_mes.db import is_retryable
from gmp_mes.errors import DomainError, Forbidden, Unauthenticated, ValidationFailed
from gmp_mes.models import Role

log = logging.getLogger("gmp_mes")
F = TypeVar("F", bound=Callable[..., Any])


class GmpFlask(Flask):
    """Flask whose request boundary commits the unit of work after a successful view.

    An API POST with an ``Idempotency-Key`` is claimed first and its answer stored in
    the same transaction (:mod:`gmp_mes.idempotency`). A deadlock or serialization
    failure rolls the whole unit of work back; it is run once more, and a second
    failure is answered 503 ``concurrent_update`` (:func:`handle_database_error`)."""

    def dispatch_request(self) -> ResponseReturnValue:
        try:
            return self._dispatch_once()
        except DBAPIError as error:
            if not is_retryable(error):
                raise
            log.warning("concurrent update (%s), running the request once more", error.orig)
            _rollback()
            idempotency.forget_claim()
            return self._dispatch_once()

    def _dispatch_once(self) -> ResponseReturnValue:
        _precheck_signers()
        replay = idempotency.claim()
        if replay is not None:
            return replay
        result = super().dispatch_request()
        db_session: Session | None = g.pop("db_session", None)
        if db_session is not None:
            try:
                if "idempotency" in g:
                    result = idempotency.store(db_session, self.make_response(result))
                db_session.commit()
            finally:
                db_session.close()
        return result


def _signers() -> list[tuple[str | None, str]]:
    """(user name or None for the caller, password) of each signer a request carries:
    API members ``{"password": ...}`` (``signature``) or ``{"username", "password"}``
    (``verifier``); page fields ``password`` and ``verifier_username``/``_password``."""
    if request.is_json:
        body = request.get_json(silent=True)
        members = body.values() if isinstance(body, dict) else ()
        return [(m.get("username") if isinstance(m.get("username"), str) else None,
                 m["password"]) for m in members
                if isinstance(m, dict) and isinstance(m.get("password"), str)]
    form = request.form
    pairs: list[tuple[str | None, str]] = []
    if "password" in form:
        pairs.append((None, form["password"]))
    if "verifier_password" in form and form.get("verifier_username"):
        pairs.append((form["verifier_username"], form["verifier_password"]))
    return pairs


def _precheck_signers() -> None:
    """Check the signers' passwords before the write transaction begins (issue 13):
    Argon2 must not run under the SQLite writer lock or PostgreSQL row locks. ``sign``
    uses the verdicts (:func:`gmp_mes.signatures.precheck`)."""
    user = g.get("user")
    if request.method in SAFE_METHODS or user is None:
        return
    pairs = _signers()
    if not pairs:
        return
    session = db_session()
    with _lookup_connection() as connection:
        for username, password in pairs[:4]:  # a request signs at most twice
            signatures.precheck(session, connection, username or user.username, password)


def commit_unit_of_work() -> None:
    """Commit the request's changes now, before slow work that needs no lock (rendering
    a label sheet): on SQLite the writer lock, on PostgreSQL the row locks, are released.
    What follows must not write; the boundary has nothing left to commit. A request
    holding an ``Idempotency-Key`` claim keeps its transaction: its answer, not yet
    made, must commit with its changes."""
    if "idempotency" in g:
        return
    s: Session | None = g.pop("db_session", None)
    if s is not None:
        try:
            s.commit()
        finally:
            s.close()


def writes(view: F) -> F:
    """Mark a GET view that records something (a label print) as a writer."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.writes = True
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _close_session(_exc: BaseException | None) -> None:
    s: Session | None = g.pop("db_session", None)
    if s is not None:
        s.rollback()
        s.close()


# --- authentication -------------------------------------------------------------------


def login_required(view: F) -> F:
    return roles_required()(view)


def roles_required(*roles: str) -> Callable[[F], F]:
    """Any authenticated user when no role is named; otherwise one of ``roles``."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                raise Unauthenticated("log in or send a valid bearer token")
            if roles and not user.has_role(*roles):
                raise Forbidden(f"this action needs the role {' or '.join(roles)}")
            return view(*args, **kwargs)

        wrapper.required_roles = roles  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _enforce_declared_roles() -> BaseResponse | None:
    """Check the roles a view declares before anything else runs (body parsing included),
    so an unauthenticated or unauthorised caller learns nothing from validation errors."""
    view = current_app.view_functions.get(request.endpoint or "")
    roles = getattr(view, "required_roles", None)
    if roles is None:
        return None
    user = current_user()
    if user is None and not request.path.startswith("/api/"):
        return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))
    if user is None:
        raise Unauthenticated("log in or send a valid bearer token")
    if roles and not user.has_role(*roles):
        raise Forbidden(f"this action needs the role {' or '.join(roles)}")
    return None


def roles_except(*excluded: str) -> Callable[[F], F]:
    """Any authenticated user holding at least one role other than ``excluded``."""
    return roles_required(*(r.value for r in Role if r.value not in excluded))


# --- CSRF for session-authenticated forms ----------------------------------------------


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _check_csrf() -> None:
    if request.method in SAFE_METHODS or request.path.startswith("/api/"):
        return
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(sent, expected):
        raise Forbidden("the form has expired or was not sent by this site; reload the page")


# --- problem+json -----------------------------------------------------------------------


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _rollback() -> None:
    s: Session | None = g.pop("db_session", None)
    if s is not None:
        s.rollback()
        s.close()


def form_signature(meaning: str) -> signatures.SignatureInput:
    """The e-signature fields of a page form (``password``, ``meaning``, default the
    action's, and ``signature_reason``); the signing service checks the password and
    which meanings the action takes."""
    return signatures.SignatureInput(
        password=request.form.get("password", ""),
        meaning=request.form.get("meaning") or meaning,
        reason=request.form.get("signature_reason") or None,
    )


def undo_failed_form(error: DomainError) -> None:
    """A page form's unit of work failed: roll it back, then keep what must be kept
    (its follow-up, e.g. a failed password counted toward lockout), as the API edge does."""
    db_session().rollback()
    run_follow_up(error)


def form_refusal(error: DomainError) -> tuple[dict[str, list[str]], str | None]:
    """A refused page form: roll back (keeping the follow-up), then the field errors keyed
    by the form's field names (the signature's password is the form's ``password``) and
    the message for the summary (none when the field errors say it all)."""
    undo_failed_form(error)
    errors = dict(error.errors or {})
    if "signature.password" in errors:
        errors["password"] = errors.pop("signature.password")
    return errors, None if isinstance(error, ValidationFailed) and errors else error.detail


def run_follow_up(error: DomainError, answer: Response | None = None) -> None:
    """The follow-up of a refusal, in its own transaction; with it, the refusal's
    ``answer`` for the request's ``Idempotency-Key`` (when one was claimed)."""
    keep = idempotency.keeper(answer) if answer is not None else None
    if error.follow_up is None and keep is None:
        return
    try:
        with database().transaction(actor=Actor.system("security")) as s:
            if error.follow_up is not None:
                error.follow_up(s)
            if keep is not None:
                keep(s)
    except DomainError as refused:  # the follow-up itself refused (the clock went backwards)
        run_follow_up(refused)  # keeps its own record (the alert), then answers instead
        raise


def handle_domain_error(error: DomainError) -> Response:
    _rollback()
    if _wants_html():
        try:
            run_follow_up(error)
        except DomainError as refused:
            error = refused
        return _html_error(error.status, error.title, error.detail)
    answer = _problem_of(error)
    try:
        run_follow_up(error, answer)
    except DomainError as refused:
        answer = _problem_of(refused)
    return answer


def _problem_of(error: DomainError) -> Response:
    return problem(
        error.status, error.code, error.title, error.detail, errors=error.errors,
        extra=error.extra, headers=getattr(error, "headers", None),
    )


def handle_http_exception(error: HTTPException) -> Response:
    _rollback()
    status = error.code or 500
    code = {400: "malformed_body", 401: "unauthenticated", 403: "forbidden_role"}.get(
        status, _snake(error.name)
    )
    errors = None
    data = getattr(error, "data", None)
    if status == 422 and isinstance(data, dict):
        messages = data.get("messages", {})
        errors = _flatten(messages.get("json", messages) if isinstance(messages, dict) else {})
        code = "validation_error"
    headers = {
        k: v for k, v in error.get_headers() if k.lower() not in ("content-type", "content-length")
    }
    if _wants_html() and status != 405:
        return _html_error(status, error.name, error.description or "")
    return problem(
        status, code, error.name, error.description or error.name, errors=errors, headers=headers
    )


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """webargs/marshmallow nest errors; problem+json wants field -> list of messages."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, list):
        flat[prefix or "_body"] = [str(m) for m in messages]
        return flat
    if not isinstance(messages, dict):
        return {prefix or "_body": [str(messages)]}
    for key, value in messages.items():
        name = "_body" if key == "_schema" else str(key)
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(value, dict):
            flat.update(_flatten(value, path))
        else:
            flat[path] = [str(m) for m in (value if isinstance(value, list) else [value])]
    return flat


def handle_out_of_range(error: Exception) -> Response:
    """A value the database cannot store (a number beyond 64 bits, a date past year 9999
    once shifted to UTC, NUL in text): bad input, never a 500. The edge and the schemas
    refuse these first (gmp_mes.edge); this is the net behind them."""
    _rollback()
    log.warning("value out of range (request %s): %s", g.get("request_id", "-"), error)
    if _wants_html():
        return _html_error(422, "Unprocessable Content", "a value is out of range")
    return problem(
        422,
        "value_out_of_range",
        "Unprocessable Content",
        "a value is out of the range this system can store",
    )


def handle_database_error(error: StatementError) -> Response:
    if isinstance(error, DataError) or (
        not isinstance(error, DBAPIError) and isinstance(error.orig, OverflowError | ValueError)
    ):
        return handle_out_of_range(error)
    if not isinstance(error, DBAPIError):
        return handle_unexpected(error)
    _rollback()
    if is_retryable(error):
        log.error("concurrent update, failed twice: %s", error.orig)
        return problem(
            503,
            "concurrent_update",
            "Concurrent update",
            "other changes to the same records were made at the same moment and this one "
            "was undone twice; nothing was saved: try again",
            headers={"Retry-After": "1"},
        )
    if isinstance(error, IntegrityError):
        log.warning("integrity conflict: %s", error.orig)
        return problem(
            409,
            "conflict",
            "Conflict",
            "the change conflicts with existing records; reload and try again",
        )
    if isinstance(error, OperationalError):
        log.error("database unavailable: %s", error.orig)
        return problem(
            503,
            "database_unavailable",
            "Service unavailable",
            "the database did not answer; try again",
            headers={"Retry-After": "5"},
        )
    return handle_unexpected(error)


def handle_unexpected(error: Exception) -> Response:
    _rollback()
    request_id = g.get("request_id", "-")
    log.exception("unexpected error (request %s)", request_id, exc_info=error)
    detail = f"an unexpected error occurred; quote request id {request_id} to support"
    if _wants_html():
        return _html_error(500, "Internal error", detail)
    return problem(
        500, "internal_error", "Internal server error", detail, extra={"request_id": request_id}
    )


def _wants_html() -> bool:
    return (
        not request.path.startswith("/api/")
        and request.path != "/healthz"
        and ("text/html" in request.headers.get("Accept", ""))
    )


def _html_error(status: int, title: str, detail: str) -> Response:
    return Response(
        render_template("error.html", status=status, title=title, detail=detail),
        status=status,
        mimetype="text/html",
    )


def install(app: Flask) -> None:
    """Wire the edge into an application."""
    app.before_request(edge.assign_request_id)
    app.before_request(_check_csrf)
    app.before_request(_enforce_declared_roles)
    edge.install(app)  # input limits (after the role check) and the int64 route converter
    app.after_request(edge.security_headers)
    app.teardown_appcontext(_close_session)
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(DBAPIError, handle_database_error)
    app.register_error_handler(StatementError, handle_database_error)
    app.register_error_handler(OverflowError, handle_out_of_range)
    app.register_error_handler(Exception, handle_unexpected)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["current_user"] = current_user
