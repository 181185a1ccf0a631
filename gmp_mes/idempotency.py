"""Idempotent API POSTs (SPEC §7): the ``Idempotency-Key`` header.

A scanner or bedside device that lost an answer sends the same request again with the
same key; it gets the first answer back and nothing is written twice.

- The key is claimed (a row of ``idempotency_key``, per user and key) in the request's
  own transaction before the view runs, and the answer is stored in it just before
  COMMIT: the key exists exactly when the request's changes were committed.
- A repeat by the same user with the same key and the same request (method, path,
  body) gets the stored answer (header ``Idempotent-Replayed: true``); with another
  request it is refused, 422 ``idempotency_key_reused``.
- Concurrent duplicates: on PostgreSQL the second INSERT of the key waits on the unique
  index for the first transaction, then finds its answer (or, if it rolled back,
  runs itself); on SQLite writers are serialised anyway. A key whose first request is
  still running elsewhere answers 409 ``idempotency_in_progress``.
- A refusal the service decided (4xx domain error) is kept too, in the transaction of
  its follow-up (a refused administration's verdict, a failed signature): a retry does
  not record it twice. Validation errors of the body and 5xx answers are not kept: the
  retry runs again.
- Unauthenticated POSTs (token, password change) have no user to key on: the header is
  ignored there.
- Keys are kept for :data:`KEEP` (a device retries within minutes), then forgotten by a
  scheduler job (:func:`purge_job`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from flask import Flask, Response, current_app, g, request
from sqlalchemy import CursorResult, Table, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from gmp_mes.clock import utcnow
from gmp_mes.context import current_user, db_session, problem
from gmp_mes.models import IdempotencyKey

HEADER = "Idempotency-Key"
KEEP = timedelta(days=7)
MAX_KEY_LENGTH = 200
DESCRIPTION = (
    "Optional. A client-chosen unique key (1-200 printable ASCII characters) for this "
    "request. A repeat with the same key by the same user returns the first answer "
    "(marked `Idempotent-Replayed: true`) and writes nothing new; the same key with a "
    "different request gives 422 `idempotency_key_reused`, and while the first request "
    "is still running 409 `idempotency_in_progress`. Ignored on unauthenticated POSTs."
)
PARAMETER = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "description": DESCRIPTION,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
}
# Written in Core (no ORM session sync); declarative types ``__table__`` as a FromClause.
_TABLE = cast(Table, IdempotencyKey.__table__)


def _applies() -> bool:
    return request.method == "POST" and request.path.startswith("/api/")


def _fingerprint() -> str:
    secret = str(current_app.config["SECRET_KEY"]).encode()
    message = b"\0".join((request.method.encode(), request.full_path.encode(),
                          request.get_data(cache=True)))
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _insert(session: Session) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _find(session: Session, user_id: int, key: str) -> IdempotencyKey | None:
    return session.scalar(
        select(IdempotencyKey)
        .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        .execution_options(populate_existing=True)
    )


def _claim_row(session: Session, values: dict[str, Any]) -> int | None:
    statement = (
        _insert(session)(_TABLE).values(**values)
        .on_conflict_do_nothing(index_elements=["user_id", "key"])
        .returning(_TABLE.c.id)
    )
    return session.execute(statement).scalar()


def claim() -> Response | None:
    """Before the view: claim the request's key, or answer with what is stored for it.

    Returns None when the view is to run (no key, or the key is new and now claimed)."""
    if not _applies() or HEADER not in request.headers:
        return None
    user = current_user()
    if user is None:
        return None
    key = request.headers[HEADER]
    if not 0 < len(key) <= MAX_KEY_LENGTH or not (key.isascii() and key.isprintable()):
        return problem(400, "idempotency_key_invalid", "Bad request",
                       f"the {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable "
                       "ASCII characters")
    session = db_session()
    fingerprint = _fingerprint()
    stored = _find(session, user.id, key)
    if stored is None:
        claimed = _claim_row(session, {
            "user_id": user.id, "key": key, "method": request.method,
            "path": request.path[:500], "fingerprint": fingerprint, "status": None,
            "created_at": utcnow(),
        })
        if claimed is not None:
            g.idempotency = claimed
            return None
        stored = _find(session, user.id, key)  # a duplicate committed while we waited
        assert stored is not None
    if not hmac.compare_digest(stored.fingerprint, fingerprint):
        return problem(422, "idempotency_key_reused", "Unprocessable content",
                       f"{HEADER} {key!r} was used for another request ({stored.method} "
                       f"{stored.path}); use a new key for a new request")
    if stored.status is None:
        return problem(409, "idempotency_in_progress", "Conflict",
                       f"the first request with {HEADER} {key!r} is still being processed; "
                       "retry later", headers={"Retry-After": "1"})
    content_type = stored.content_type or "application/json"
    body: str | bytes = stored.body or ""
    if not _is_text(content_type):
        body = base64.b64decode(body)
    response = Response(body, status=stored.status, content_type=content_type)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _is_text(content_type: str) -> bool:
    """JSON, problem+json, HTML, SVG are kept as text; a label file (PDF, PNG, ZPL sent
    as octets) is binary and kept base64-encoded in the same text column."""
    media = content_type.split(";")[0].strip().lower()
    return media.startswith("text/") or media.endswith(("json", "+xml"))


def _values(response: Response) -> dict[str, Any]:
    content_type = response.content_type or "application/json"
    data = response.get_data()
    body = data.decode("utf-8") if _is_text(content_type) else base64.b64encode(data).decode()
    return {"status": response.status_code, "content_type": content_type, "body": body}


def answer_holds_a_secret() -> None:
    """Called by a view whose answer carries a secret shown once (a one-time password):
    the answer is never stored. A repeat with the same key gets 409
    ``idempotency_answer_not_kept`` and writes nothing (21 CFR 11.300: a password is
    never kept in clear)."""
    g.idempotency_secret = True


def _not_kept() -> Response:
    return problem(409, "idempotency_answer_not_kept", "Conflict",
                   "the first request with this key was carried out, and its answer held a "
                   "secret shown once, which is never stored; it is not carried out again")


def store(session: Session, response: Response) -> Response:
    """Before COMMIT of a claimed request: keep its answer in the same transaction."""
    claimed = g.get("idempotency")
    if claimed is None or response.status_code >= 500:
        return response
    kept = _not_kept() if g.get("idempotency_secret") else response
    session.execute(
        _TABLE.update()
        .where(_TABLE.c.id == claimed)
        .values(**_values(kept))
    )
    return response


def keeper(response: Response) -> Callable[[Session], None] | None:
    """For a refusal (domain error, 4xx but 429) of a request that claimed a key: a step
    for the follow-up transaction that stores the answer (the claim was rolled back with
    the request)."""
    if g.pop("idempotency", None) is None or not 400 <= response.status_code < 500 \
            or response.status_code == 429:
        return None
    user = g.get("user")
    if user is None:
        return None
    values = {
        "user_id": user.id, "key": request.headers[HEADER], "method": request.method,
        "path": request.path[:500], "fingerprint": _fingerprint(), "created_at": utcnow(),
        **_values(response),
    }

    def keep(session: Session) -> None:
        _claim_row(session, values)

    return keep


def forget_claim() -> None:
    """The request's transaction was rolled back (to be run again): the claim went with it."""
    g.pop("idempotency", None)


def purge_job(app: Flask) -> list[str]:
    """Scheduler job: forget the answers older than :data:`KEEP`."""
    with app.extensions["gmp_mes.db"].transaction() as session:
        removed = cast("CursorResult[Any]", session.execute(delete(_TABLE).where(
            _TABLE.c.created_at < utcnow() - KEEP, _TABLE.c.status.is_not(None)))).rowcount
    return [f"idempotency: {removed} key(s) older than {KEEP.days} days forgotten"] \
        if removed else []


def plugin() -> Any:
    """An apispec plugin documenting the header on every POST operation."""
    from apispec import BasePlugin

    class IdempotencyHeader(BasePlugin):
        def operation_helper(self, path: str | None = None,
                             operations: dict[str, Any] | None = None, **_kw: Any) -> None:
            post = (operations or {}).get("post")
            if post is not None:
                post.setdefault("parameters", []).append(dict(PARAMETER))

    return IdempotencyHeader()
