"""Electronic signatures (21 CFR 11.50, 11.70, 11.200).

Each signing re-enters the password (11.200(a)(1)), states a meaning, and is
stored with printed name, UTC time and the digest of the exact content signed,
so any later change to the record no longer matches its signature (11.70).
A wrong password signs nothing and counts toward lockout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from gmp_mes import audit
from gmp_mes.accounts import MAX_FAILED_LOGINS, record_failure
from gmp_mes.errors import AccountInactive, AccountLocked, SignatureRejected, ValidationFailed
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
    max_failed: int = MAX_FAILED_LOGINS,
) -> Signature:
    """Execute a signature over ``content``; raise before writing anything on failure."""
    allowed = sorted(set(meanings) if meanings else {m.value for m in Meaning})
    if given.meaning not in allowed:
        raise ValidationFailed(
            "signature meaning not allowed here",
            errors={"signature.meaning": [f"must be one of: {', '.join(allowed)}"]},
        )
    if user.locked_at is not None:
        raise AccountLocked(f"account {user.username} is locked; it cannot sign")
    if not user.active:
        raise AccountInactive(f"account {user.username} is deactivated; it cannot sign")
    if not check_password(user.password_hash, given.password or ""):
        raise SignatureRejected(
            "password does not match: nothing was signed",
            errors={"signature.password": ["wrong password"]},
            follow_up=record_failure(user.username, max_failed),
        )
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
