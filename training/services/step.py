"""The qualification check at a step (SPEC §11, §12; EU GMP Part IV 3, 21 CFR 211.25),
provided to batches through ``gmp_mes.registry.step_requirements`` as ``qualification``.

A step declaring ``qualification`` is refused (``not_qualified``, one reason per person)
when the performer, or the verifier when one is named, holds no record of that code
valid at the step's time: granted at or before it, not yet expired (``at < valid_until``)
and not revoked at or before it. The message names the person, the qualification and why
(never trained, expired at, revoked at). A step declaring none costs nothing.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes.accounts import find_user
from gmp_mes.audit import format_time
from gmp_mes.db import lock_rows
from gmp_mes.localtime import in_utc, local_and_utc, zone_of
from gmp_mes.models import User
from gmp_mes.registry import Reason, StepCheck, StepContext
from training.models import Qualification, RecordStatus
from training.services.records import Standing, records_of, standing_of

NOT_QUALIFIED = "not_qualified"


def _why(standing: Standing, user: User | None) -> str:
    """Why a person does not hold it at the step's time, at their site's time and UTC."""
    code, record, tz = standing.code, standing.record, zone_of(user)
    if record is None:
        return f"never trained in {code}"
    if standing.status == RecordStatus.REVOKED and record.revocation is not None:
        return (f"{code} was revoked at {local_and_utc(record.revocation.revoked_at, tz)} "
                f"({record.revocation.reason})")
    return f"{code} expired at {local_and_utc(record.valid_until, tz)}"


def check_step_qualification(session: Session, ctx: StepContext) -> StepCheck:
    """The qualification part of a step's check (``registry.step_requirements``)."""
    code = ctx.needs.qualification
    if not code:
        return StepCheck()  # runs on every step: nothing to read
    people: list[tuple[str, str, User | None]] = [
        ("performer", str(ctx.performer_id), session.get(User, ctx.performer_id))]
    if ctx.verifier_username:
        name = ctx.verifier_username.strip().lower()
        # An unknown name is "never trained", like anyone untrained: the field stays no
        # oracle for who exists (the verifier's signature is refused by batches anyway).
        people.append(("verifier", name, find_user(session, name)))
    ids = sorted({user.id for _, _, user in people if user is not None})
    if ctx.recording and ids:
        # Serialised with a revocation of these records (it locks them too); read after
        # the lock, in a statement of its own, so a revocation committed meanwhile counts.
        session.execute(lock_rows(
            select(Qualification.id).where(Qualification.user_id.in_(ids),
                                           Qualification.code == code)
            .order_by(Qualification.id), Qualification)).all()
    found = records_of(session, ids, code) if ids else {}
    reasons: list[Reason] = []
    signed: list[dict[str, object]] = []
    for role, name, user in people:
        records = found.get(user.id, []) if user is not None else []
        standing = standing_of(records, code, ctx.at)
        if standing.status == RecordStatus.VALID and standing.record is not None:
            username, until = standing.record.user.username, standing.record.valid_until
            signed.append({"role": role, "username": username, "qualification": code,
                           "record": standing.record.id, "valid_until": format_time(until),
                           # What the batch page shows under the step (batches draws it).
                           "label": f"{role} {username}: {code} until {in_utc(until)}"})
            continue
        who = f"{user.full_name} ({user.username})" if user is not None else name
        reasons.append({"code": NOT_QUALIFIED,
                        "message": f"the {role} {who} is not qualified for step "
                                   f"{ctx.step_code}: {_why(standing, user)}"})
    return StepCheck(reasons=reasons, signed=signed)
