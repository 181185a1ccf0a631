"""Electronic signatures (21 CFR 11.50, 11.70, 11.200).

Each signing re-enters the password (11.200(a)(1)), states a meaning, and is
stored with printed name, UTC time and the digest of the exact content signed,
so any later change to the record no longer matches its signature (11.70).
A wrong password signs nothing and counts toward lockout, within the failed-password
rate limits (21 CFR 11.300(d)). A second person named in a field (a verifier) gets one
generic refusal whatever went wrong, so the field reveals neither who exists nor roles.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from gmp_mes import audit
from gmp_mes.accounts import Person, check_rate, failure_follow_up, find_user
from gmp_mes.errors import (
    AccountInactive,
    AccountLocked,
    SegregationOfDuties,
    SignatureRejected,
    ValidationFailed,
)
from gmp_mes.models import Meaning, Signature, User
from gmp_mes.passwords import check_password


@dataclass(frozen=True)
class SignatureInput:
    password: str
    meaning: str
    reason: str | None = None


def sign(
    session: Session,
    user: User,
    given: SignatureInput,
    *,
    entity_type: str,
    entity_id: str,
    content: Any,
    meanings: Iterable[str] | None = None,
    max_failed: int | None = None,
) -> Signature:
    """Execute a signature over ``content``; raise before writing anything on failure."""
    _check_meaning(given, meanings, "signature.meaning")
    check_rate(session, user.username)
    if user.locked_at is not None:
        raise AccountLocked(f"account {user.username} is locked; it cannot sign")
    if not user.active:
        raise AccountInactive(f"account {user.username} is deactivated; it cannot sign")
    if not _password_ok(session, user, given.password or ""):
        raise SignatureRejected(
            "password does not match: nothing was signed",
            errors={"signature.password": ["wrong password"]},
            follow_up=failure_follow_up(session, user.username, max_failed),
        )
    return _execute(session, user, given, entity_type, entity_id, content)


def _check_meaning(given: SignatureInput, meanings: Iterable[str] | None, field: str) -> None:
    allowed = sorted(set(meanings) if meanings else {m.value for m in Meaning})
    if given.meaning not in allowed:
        raise ValidationFailed(
            "signature meaning not allowed here",
            errors={field: [f"must be one of: {', '.join(allowed)}"]},
        )


def sign_as_second_person(
    session: Session,
    username: str,
    given: SignatureInput,
    *,
    performer: Person,
    roles: Iterable[str],
    entity_type: str,
    entity_id: str,
    content: Any,
    meanings: Iterable[str] | None = None,
    field: str = "verifier",
) -> Signature:
    """The signature of a second person who types user name and password into a field
    (21 CFR 11.200(a)(1)(i)). Whatever is wrong (no such user, wrong password, locked,
    deactivated, missing role) the answer is the same 401 ``signature_rejected``, after
    the same password work, so the field is no oracle for names, states or roles. Only
    a wrong password of an existing user counts toward that user's lockout, within the
    failed-password rate limits, so the field locks nobody faster than they allow."""
    _check_meaning(given, meanings, f"{field}.meaning")
    name = (username or "").strip().lower()
    check_rate(session, name)
    second = find_user(session, name)
    if second is not None and second.id == performer.id:
        raise SegregationOfDuties("the second person must not be the performer")
    valid = _hash_ok(session, second.password_hash if second else None, given.password or "")
    refusal = "the second person's user name or password was not accepted: nothing was signed"
    if second is None or not valid:
        raise SignatureRejected(refusal, errors={field: ["user name or password not accepted"]},
                                follow_up=failure_follow_up(session, name))
    if second.locked_at is not None or not second.active or not second.has_role(*roles):
        raise SignatureRejected(refusal, errors={field: ["user name or password not accepted"]})
    return _execute(session, second, given, entity_type, entity_id, content)


def _execute(
    session: Session, user: User, given: SignatureInput, entity_type: str, entity_id: str,
    content: Any,
) -> Signature:
    signature = Signature(
        user_id=user.id,
        username=user.username,
        printed_name=user.full_name,
        meaning=given.meaning,
        reason=(given.reason or None),
        entity_type=entity_type,
        entity_id=entity_id,
        content_digest=audit.digest(content),
    )
    session.add(signature)
    session.flush()
    return signature


# --- password checks done before the write transaction (issue 13) ------------------------
#
# Argon2 is slow on purpose. Checked inside a write transaction it would hold the SQLite
# writer lock (every station waits) or PostgreSQL row locks. The HTTP edge checks the
# passwords a request carries first, on a read connection (:func:`precheck`); ``sign``
# then finds the verdict for exactly that stored hash and password and does not hash
# again. A password changed in between gives another stored hash: checked afresh.

PRECHECKED = "prechecked_passwords"
_KEY = secrets.token_bytes(32)  # the verdicts are keyed per process, held per session


def _token(stored_hash: str | None, password: str) -> bytes:
    return hmac.new(_KEY, f"{stored_hash}\0{password}".encode(), hashlib.sha256).digest()


def precheck(session: Session, connection: Connection, username: str, password: str) -> None:
    """Check ``username``'s password on ``connection`` (a read, outside the write
    transaction) and keep the verdict in ``session`` for :func:`sign`."""
    if not username.isprintable() or not password.isprintable():
        return  # the input schema refuses it (422) before anything is signed
    stored = connection.execute(
        select(User.password_hash).where(User.username == username.strip().lower())
    ).scalar()
    # An unknown name costs the same password work here, outside the lock, and is kept
    # as a refusal (sign_as_second_person must answer it like a wrong password).
    session.info.setdefault(PRECHECKED, {})[_token(stored, password)] = check_password(
        stored, password)


def _hash_ok(session: Session, stored_hash: str | None, password: str) -> bool:
    verdict = session.info.get(PRECHECKED, {}).get(_token(stored_hash, password))
    return check_password(stored_hash, password) if verdict is None else verdict


def _password_ok(session: Session, user: User, password: str) -> bool:
    return _hash_ok(session, user.password_hash, password)


def still_binds(signature: Signature, content: Any) -> bool:
    """True while the record's content is exactly what was signed."""
    return signature.content_digest == audit.digest(content)
