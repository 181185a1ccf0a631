"""Warnings before a qualification expires (SPEC §12 "the sweep warns before a
qualification expires for someone who holds a running batch's steps"; EU GMP Part IV 3),
raised by the scheduler's sweep (``training.sweep.job``).

30 and 7 days ahead, for a person who started, performed or verified a step of a batch
that is not finished (``batches.services``: a status with transitions left). One alert per
record and threshold (cause ``qualification_expiring:<record id>:P30D``), so reruns never
duplicate one and a renewal (a new record) starts its own; a renewal or a revocation
acknowledges the open ones. To QA and the operators of the person's site.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from batches import services as batches
from gmp_mes.alerts import AlertSpec, Severity
from gmp_mes.localtime import in_utc
from training.services.matrix import expiring_within
from training.services.records import ALERT_SUBJECT, EXPIRING, alert_subject

THRESHOLDS: tuple[tuple[str, timedelta], ...] = (("P30D", timedelta(days=30)),
                                                  ("P7D", timedelta(days=7)))
ROLES = ("qa", "operator")


def running_batch_people(session: Session) -> set[int]:
    """Everyone on a batch not yet finished (released, rejected: no transition left)."""
    running = tuple(status for status, moves in batches.TRANSITIONS.items() if moves)
    people: set[int] = set()
    for batch in batches.list_batches(session, statuses=running):
        people |= batches.batch_performers(session, batch.batch_number)
    return people


def expiry_alerts(session: Session, now: datetime) -> list[AlertSpec]:
    """The warnings due at ``now``."""
    expiring = expiring_within(session, now, max(delta for _, delta in THRESHOLDS))
    if not expiring:
        return []
    people = running_batch_people(session)
    specs = []
    for entry in expiring:
        user, standing = entry.user, entry.standing
        if user.id not in people or standing.record is None or standing.valid_until is None:
            continue
        for name, delta in THRESHOLDS:
            if standing.valid_until - delta > now:
                continue
            specs.append(AlertSpec(
                cause=f"{EXPIRING}:{standing.record.id}:{name}", kind=EXPIRING,
                severity=(Severity.WARNING if name == "P30D" else Severity.MAJOR).value,
                subject_type=ALERT_SUBJECT, subject_id=alert_subject(user.username,
                                                                     standing.code),
                message=f"the qualification {standing.code} of {user.full_name} "
                        f"({user.username}), who works on a running batch, expires "
                        f"{in_utc(standing.valid_until)} (warning {name} before): renew it "
                        "or they cannot perform or verify its steps",
                roles=ROLES, site_code=user.site.code, due_at=standing.valid_until))
    return specs
