"""Training records (SPEC §12; EU GMP Part IV 3, 21 CFR 211.25): grant with an
e-signature, revoke with a reason, read a person's records with their status.

Never overwritten: a renewal is a new record; a revocation is a record of its own. The
status at a time is computed (``Qualification.status_at``), never stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes import alerts, audit
from gmp_mes.accounts import get_user
from gmp_mes.audit import format_time
from gmp_mes.clock import utcnow
from gmp_mes.db import lock_rows
from gmp_mes.errors import (
    Forbidden,
    InvalidTransition,
    NotFound,
    SegregationOfDuties,
    ValidationFailed,
)
from gmp_mes.localtime import in_utc, zone_of
from gmp_mes.models import Meaning, Signature, User
from gmp_mes.signatures import SignatureInput, sign
from processes.definitions import QUALIFICATION_CODE
from training.models import Qualification, QualificationRevocation, RecordStatus

GRANT_ROLES = ("qa", "admin")
# The alerts a renewal or a revocation answers (training.sweep raises them).
EXPIRING = "qualification_expiring"
ALERT_SUBJECT = "qualification"


def alert_subject(username: str, code: str) -> str:
    """The subject id of a person's qualification in alerts: ``<username>:<code>``."""
    return f"{username}:{code}"


def _granter(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    if not user.has_role(*GRANT_ROLES):
        raise Forbidden("granting or revoking a qualification needs the role qa or admin")
    return user


def _until(value: datetime | date, person: User) -> datetime:
    """A validity as given: an aware time (a naive one is UTC), or a date, meaning valid
    through that whole day at the person's site (until the next midnight there)."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    next_day = datetime.combine(value + timedelta(days=1), time(0), tzinfo=zone_of(person))
    return next_day.astimezone(UTC)


def grant_content(username: str, code: str, valid_until: datetime) -> dict[str, str]:
    """What the grantor signs (21 CFR 11.70: the signature binds this exact content)."""
    return {"user": username, "qualification": code, "valid_until": format_time(valid_until)}


def grant_qualification(
    session: Session,
    username: str,
    *,
    code: str,
    valid_until: datetime | date,
    user_id: int,
    signature: SignatureInput,
) -> Qualification:
    """A new training record for ``username`` (qa, admin; signature meaning ``approved``),
    valid from now (the system's time) until ``valid_until`` (in the future). Nobody
    grants a qualification to themselves (403 ``segregation_of_duties``)."""
    granter = _granter(session, user_id)
    person = get_user(session, username)
    now = utcnow()
    code = (code or "").strip()
    errors: dict[str, list[str]] = {}
    if not QUALIFICATION_CODE.fullmatch(code):
        errors["code"] = ["lower case letters, digits, '_' and '-', starting with a letter "
                          "(as process steps name a qualification), at most 48"]
    until = _until(valid_until, person)
    if until <= now:
        errors["valid_until"] = ["must be in the future"]
    if errors:
        raise ValidationFailed("the qualification cannot be granted", errors=errors)
    if person.id == granter.id:
        # EU GMP Part IV 3: the one who is qualified does not attest their own training.
        raise SegregationOfDuties(f"you cannot grant a qualification to yourself: another "
                                  f"QA user or administrator grants {code} to {person.username}")
    signed = sign(session, granter, signature, entity_type="qualification",
                  entity_id=alert_subject(person.username, code),
                  content=grant_content(person.username, code, until),
                  meanings={Meaning.APPROVED.value})
    record = Qualification(user=person, user_id=person.id, code=code, granted_at=now,
                           valid_until=until, granter=granter, granted_by=granter.id,
                           signature=signed, signature_id=signed.id)
    session.add(record)
    session.flush()
    # The renewal answers the warnings about the validity it extends.
    alerts.resolve_for_subject(session, ALERT_SUBJECT, alert_subject(person.username, code),
                               (EXPIRING,), f"renewed: valid until {in_utc(until)}")
    return record


def revoke_qualification(
    session: Session, username: str, code: str, *, reason: str, user_id: int
) -> list[Qualification]:
    """Withdraw ``username``'s qualification ``code`` (qa, admin) with a reason, audited
    with it: every record of that code still in force (a renewal granted before the old
    record ran out included), so the person holds it no longer from now. 404 when the
    person never held it, 409 ``invalid_transition`` when nothing is in force."""
    revoker = _granter(session, user_id)
    person = get_user(session, username)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("a revocation needs a reason",
                               errors={"reason": ["state why the qualification is revoked"]})
    # One writer per person and code: two revocations (or a revocation and a step check
    # while recording) are serialised on these rows; the unique index backs it.
    locked = list(session.scalars(lock_rows(
        select(Qualification.id).where(Qualification.user_id == person.id,
                                       Qualification.code == code)
        .order_by(Qualification.id), Qualification)))
    if not locked:
        raise NotFound(f"{person.username} has never held qualification {code!r}")
    now = utcnow()
    records = _records(session, [person.id], code)
    in_force = [r for r in records if r.revocation is None and r.valid_until > now]
    if not in_force:
        raise InvalidTransition(f"{person.username} holds no qualification {code} in force: "
                                "it has expired or was revoked already")
    with audit.reason(session, reason):
        for record in in_force:
            session.add(QualificationRevocation(qualification_id=record.id, reason=reason,
                                                revoked_by=revoker.id, revoked_at=now))
        session.flush()
    for record in in_force:
        session.expire(record, ["revocation"])
    alerts.resolve_for_subject(session, ALERT_SUBJECT, alert_subject(person.username, code),
                               (EXPIRING,), f"revoked: {reason}")
    return in_force


def _records(session: Session, user_ids: Iterable[int], code: str | None = None
             ) -> list[Qualification]:
    statement = (select(Qualification).where(Qualification.user_id.in_(list(user_ids)))
                 .order_by(Qualification.id)
                 .execution_options(populate_existing=True))
    if code is not None:
        statement = statement.where(Qualification.code == code)
    return list(session.scalars(statement).unique())


@dataclass(frozen=True)
class RecordView:
    """One training record as the API and the pages show it."""

    id: int
    username: str
    code: str
    granted_at: datetime
    valid_until: datetime
    granted_by: str
    status: str
    current: bool  # the record that decides the person's standing in this code now
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None
    signature: Signature


@dataclass(frozen=True)
class Standing:
    """A person's standing in one qualification at a time: ``valid`` (until
    ``valid_until``), ``expired`` or ``revoked`` (the latest record), or ``none``."""

    code: str
    status: str
    valid_until: datetime | None
    record: Qualification | None

    def expiring_by(self, horizon: datetime) -> bool:
        return (self.status == RecordStatus.VALID and self.valid_until is not None
                and self.valid_until <= horizon)


NONE = "none"


def standing_of(records: list[Qualification], code: str, at: datetime) -> Standing:
    """From one person's records of ``code``: held at ``at`` (the one lasting longest
    decides), else the state of the latest record granted by then, else none."""
    granted = [r for r in records if r.code == code and r.granted_at <= at]
    valid = [r for r in granted if r.valid_at(at)]
    if valid:
        best = max(valid, key=lambda r: (r.valid_until, r.id))
        return Standing(code, RecordStatus.VALID.value, best.valid_until, best)
    if not granted:
        return Standing(code, NONE, None, None)
    latest = max(granted, key=lambda r: r.id)
    return Standing(code, latest.status_at(at).value, latest.valid_until, latest)


def _view(record: Qualification, current: bool, now: datetime) -> RecordView:
    revocation = record.revocation
    return RecordView(
        id=record.id, username=record.user.username, code=record.code,
        granted_at=record.granted_at, valid_until=record.valid_until,
        granted_by=record.granter.username, status=record.status_at(now).value,
        current=current, revoked_at=revocation.revoked_at if revocation else None,
        revoked_by=revocation.revoker.username if revocation else None,
        revoke_reason=revocation.reason if revocation else None, signature=record.signature)


@dataclass(frozen=True)
class PersonRecords:
    user: User
    records: list[RecordView]  # newest first
    standings: list[Standing]  # one per code, by code


def qualifications_of(session: Session, username: str) -> PersonRecords:
    """A person's training records, newest first, with their status now, and the
    standing in each code (404 for an unknown user)."""
    person = get_user(session, username)
    now = utcnow()
    records = _records(session, [person.id])
    codes = sorted({r.code for r in records})
    standings = [standing_of(records, code, now) for code in codes]
    deciding = {s.record.id for s in standings if s.record is not None}
    views = [_view(r, r.id in deciding, now) for r in reversed(records)]
    return PersonRecords(person, views, standings)


def records_of(session: Session, user_ids: Iterable[int], code: str | None = None
               ) -> dict[int, list[Qualification]]:
    """The records of these people (of one code, if given), by user id, oldest first."""
    found: dict[int, list[Qualification]] = {}
    for record in _records(session, user_ids, code):
        found.setdefault(record.user_id, []).append(record)
    return found
