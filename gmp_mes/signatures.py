"""Electronic signatures (21 CFR 11.50, 11.70, 11.200).

Each signing re-enters the password (11.200(a)(1)), states a meaning, and is
stored with printed name, UTC time and the digest of the exact content signed,
so any later change to the record no longer matches its signature (11.70).
A wrong password signs nothing and counts toward lockout, within the failed-password
rate limits (21 CFR 11.300(d)). A second person named in a field (a verifier) gets one
generic refusal whatever went wrong, so the field reveals neither who exists nor roles.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

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
    if not check_password(user.password_hash, given.password or ""):
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
    valid = check_password(second.password_hash if second else None, given.password or "")
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


def still_binds(signature: Signature, content: Any) -> bool:
    """True while the record's content is exactly what was signed."""
    return signature.content_digest == audit.digest(content)
