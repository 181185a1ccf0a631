"""Environmental monitoring (EU GMP Annex 1 (2022) §9; SPEC §12): results judged against the
action limits of the room's grade and the site's alert limits; an excursion opens a
deviation on every batch it may affect.

Action limits (Annex 1 Table 6, cfu): grade A no growth; B 10 (air, per m³), 5 (settle
plate, 4 h), 5 (contact plate), 5 (glove print); C 100, 50, 25; D 200, 100, 50. A result
passes at or below the limit. Annex 1 sets no glove-print limit for grades C and D (gloves
are monitored where aseptic work is done, A and B): a glove print recorded there is kept
and trended, has no action limit and so cannot fail; a site alert limit, when set, still
warns. The excursion window of a failed result is every room use after the last passed
result of that sample type in that room sampled before it (none: every earlier use), up to
the first passed result sampled after it (none: still open, the sweep adds batches that
enter the room before the room is shown back in control).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from batches import services as batches
from gmp_mes import alerts
from gmp_mes.accounts import get_site
from gmp_mes.alerts import AlertSpec, Severity
from gmp_mes.audit import format_time
from gmp_mes.clock import utcnow
from gmp_mes.db import lock_rows
from gmp_mes.errors import NotFound, ValidationFailed
from gmp_mes.localtime import in_utc
from gmp_mes.models import Meaning
from gmp_mes.signatures import SignatureInput, sign
from rooms.models import EmAlertLimit, EmExcursionDeviation, EmResult, Grade, Room, RoomUse
from rooms.models import SampleType as ST
from rooms.services._common import get_room, normal_code, user_row

SAMPLE_TYPES = tuple(t.value for t in ST)
UNITS = {ST.AIR_ACTIVE: "cfu/m³", ST.SETTLE_PLATE: "cfu/4 h",
         ST.CONTACT_PLATE: "cfu/plate", ST.GLOVE_PRINT: "cfu/glove"}
# EU GMP Annex 1 (2022) Table 6: maximum action limits for viable particle contamination.
ACTION_LIMITS: dict[str, dict[str, int | None]] = {
    Grade.A: {ST.AIR_ACTIVE: 0, ST.SETTLE_PLATE: 0, ST.CONTACT_PLATE: 0, ST.GLOVE_PRINT: 0},
    Grade.B: {ST.AIR_ACTIVE: 10, ST.SETTLE_PLATE: 5, ST.CONTACT_PLATE: 5, ST.GLOVE_PRINT: 5},
    Grade.C: {ST.AIR_ACTIVE: 100, ST.SETTLE_PLATE: 50, ST.CONTACT_PLATE: 25,
              ST.GLOVE_PRINT: None},
    Grade.D: {ST.AIR_ACTIVE: 200, ST.SETTLE_PLATE: 100, ST.CONTACT_PLATE: 50,
              ST.GLOVE_PRINT: None},
}
EXCURSION, ALERT_LEVEL, RELEASED = "em_excursion", "em_alert_level", "em_excursion_released"
# The sweep looks back this far for failed results whose window may have grown.
SWEEP_LOOKBACK = timedelta(days=30)
ROLES = ("qa", "qc")


def action_limit(grade: str, sample_type: str) -> int | None:
    return ACTION_LIMITS[grade][sample_type]


def judge(grade: str, sample_type: str, value: int,
          alert: int | None) -> tuple[bool, bool]:
    """(passed, alert_level): passed at or below the grade's action limit (no limit: always);
    alert level when passed at or above the site's alert limit."""
    limit = action_limit(grade, sample_type)
    passed = limit is None or value <= limit
    return passed, passed and alert is not None and value >= alert


def unit_of(sample_type: str) -> str:
    return UNITS[ST(sample_type)]


def _words(sample_type: str) -> str:
    return sample_type.replace("_", " ")


def _sample_type(value: str, errors: dict[str, list[str]]) -> str:
    if value not in SAMPLE_TYPES:
        errors["sample_type"] = [f"one of: {', '.join(SAMPLE_TYPES)}"]
    return value


# --- alert limits ------------------------------------------------------------------------

def alert_limit_of(session: Session, site_code: str, grade: str,
                   sample_type: str) -> int | None:
    return session.scalar(select(EmAlertLimit.alert_limit).where(
        EmAlertLimit.site_code == site_code, EmAlertLimit.grade == grade,
        EmAlertLimit.sample_type == sample_type))


def alert_limits(session: Session, site_code: str | None = None) -> list[EmAlertLimit]:
    statement = select(EmAlertLimit).order_by(EmAlertLimit.site_code, EmAlertLimit.grade,
                                              EmAlertLimit.sample_type)
    if site_code:
        statement = statement.where(EmAlertLimit.site_code == normal_code(site_code))
    return list(session.scalars(statement))


def set_alert_limit(session: Session, *, site_code: str, grade: str, sample_type: str,
                    alert_limit: int, user_id: int) -> EmAlertLimit:
    """A site's alert limit for a grade and sample type (admin; Annex 1 §9: alert levels
    below the action limit, from the site's trend data). Setting it again replaces it
    (the audit trail keeps every value). At most the action limit: grade A (no growth)
    takes none."""
    errors: dict[str, list[str]] = {}
    grade = normal_code(grade)
    if grade not in ACTION_LIMITS:
        errors["grade"] = ["one of A, B, C, D"]
    sample_type = _sample_type(sample_type, errors)
    if isinstance(alert_limit, bool) or not isinstance(alert_limit, int) or alert_limit < 1:
        errors["alert_limit"] = ["a whole number of cfu, at least 1"]
    try:
        site = get_site(session, site_code or "")
    except NotFound:
        errors["site"] = [f"no site {site_code!r}"]
    if not errors:
        limit = action_limit(grade, sample_type)
        if limit is not None and alert_limit > limit:
            errors["alert_limit"] = [
                f"grade {grade} {_words(sample_type)}: the action limit is "
                + ("no growth: no alert limit below it" if limit == 0
                   else f"{limit} {unit_of(sample_type)}; the alert limit is at most that")]
    if errors:
        raise ValidationFailed("the alert limit cannot be set", errors=errors)
    user = user_row(session, user_id)
    row = session.scalar(lock_rows(select(EmAlertLimit).where(
        EmAlertLimit.site_code == site.code, EmAlertLimit.grade == grade,
        EmAlertLimit.sample_type == sample_type), EmAlertLimit))
    if row is None:
        row = EmAlertLimit(site_code=site.code, grade=grade, sample_type=sample_type,
                           alert_limit=alert_limit, set_by=user.id, set_at=utcnow())
        session.add(row)
    else:
        row.alert_limit, row.set_by, row.set_at = alert_limit, user.id, utcnow()
    session.flush()
    return row


# --- results -----------------------------------------------------------------------------

@dataclass
class EmOutcome:
    """A recorded result and what it did: the deviations it opened (numbers), the batches
    already released it affects, the alert-level warning."""

    result: EmResult
    deviations: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    warning: str | None = None


def _result_text(room: Room, result: EmResult) -> str:
    where = f" at {result.location}" if result.location else ""
    return (f"EM result {result.id} in room {room.code} (grade {result.grade}): "
            f"{_words(result.sample_type)} {result.value} {unit_of(result.sample_type)}"
            f"{where}, sampled {in_utc(result.sampled_at)}")


def record_em_result(session: Session, room_code: str, *, sample_type: str, value: int,
                     sampled_at: datetime, user_id: int, signature: SignatureInput,
                     location: str | None = None) -> EmOutcome:
    """A signed EM result (qc, operator), judged at once: ``passed`` against the room
    grade's action limit, ``alert_level`` against the site's alert limit. A failure raises
    the ``em_excursion`` alert and opens a deviation on every affected batch (critical in
    grades A and B, major otherwise); a result at or above the alert limit within the
    action limit passes with a warning (``em_alert_level`` alert, no deviation)."""
    room = get_room(session, room_code)
    errors: dict[str, list[str]] = {}
    sample_type = _sample_type(sample_type, errors)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        errors["value"] = ["colony-forming units: a whole number, 0 or more"]
    now = utcnow()
    if not isinstance(sampled_at, datetime) or sampled_at.tzinfo is None:
        errors["sampled_at"] = ["a date and time with its zone"]
    elif sampled_at > now:
        errors["sampled_at"] = ["cannot be in the future"]
    location = location.strip() if location and location.strip() else None
    if errors:
        raise ValidationFailed("the EM result cannot be recorded", errors=errors)
    limit = action_limit(room.grade, sample_type)
    alert = alert_limit_of(session, room.site_code, room.grade, sample_type)
    passed, alert_level = judge(room.grade, sample_type, value, alert)
    user = user_row(session, user_id)
    signed = sign(session, user, signature, entity_type="em_result",
                  entity_id=f"{room.code}:{sample_type}",
                  content={"room": room.code, "grade": room.grade, "sample_type": sample_type,
                           "value": value, "unit": unit_of(sample_type),
                           "sampled_at": format_time(sampled_at), "location": location,
                           "action_limit": limit, "alert_limit": alert, "passed": passed},
                  meanings={Meaning.PERFORMED.value})
    result = EmResult(room_code=room.code, grade=room.grade, sample_type=sample_type,
                      value=value, sampled_at=sampled_at, location=location,
                      action_limit=limit, alert_limit=alert, passed=passed,
                      alert_level=alert_level, signature_id=signed.id, recorded_by=user.id,
                      recorded_at=now)
    session.add(result)
    session.flush()
    outcome = EmOutcome(result)
    if alert_level:
        outcome.warning = (f"{value} {unit_of(sample_type)} is at or above the site's alert "
                           f"limit {alert} (action limit {limit}): passed, trend it")
        alerts.raise_alert(session, AlertSpec(
            cause=f"{ALERT_LEVEL}:{result.id}", kind=ALERT_LEVEL,
            severity=Severity.WARNING.value, subject_type="room", subject_id=room.code,
            roles=ROLES, site_code=room.site_code,
            message=f"{_result_text(room, result)}: at or above the alert limit {alert}, "
                    f"within the action limit {limit}"))
    if not passed:
        alerts.raise_alert(session, AlertSpec(
            cause=f"{EXCURSION}:{result.id}", kind=EXCURSION,
            severity=_severity(room.grade), subject_type="room", subject_id=room.code,
            roles=(*ROLES, "operator"), site_code=room.site_code,
            message=f"{_result_text(room, result)}: above the Annex 1 action limit "
                    f"{limit} {unit_of(sample_type)}; the batches made in the room since "
                    "the last passed result are held by a deviation"))
        for link in link_excursion(session, result):
            if link.deviation_number:
                outcome.deviations.append(link.deviation_number)
        outcome.released = released_batches(session, result)
    return outcome


def _severity(grade: str) -> str:
    # SPEC §12: critical in the aseptic core and its background (A, B), major otherwise.
    return Severity.CRITICAL.value if grade in (Grade.A, Grade.B) else Severity.MAJOR.value


@dataclass(frozen=True)
class Window:
    """The room uses a failed result may have affected: after ``start`` (the last passed
    result of its type before it; None: every earlier use) and before ``end`` (the first
    passed result after it; None: open)."""

    start: datetime | None
    end: datetime | None


def excursion_window(session: Session, result: EmResult) -> Window:
    same = (EmResult.room_code == result.room_code,
            EmResult.sample_type == result.sample_type, EmResult.passed.is_(True),
            EmResult.id != result.id)
    start = session.scalar(select(func.max(EmResult.sampled_at)).where(
        *same, EmResult.sampled_at <= result.sampled_at))
    end = session.scalar(select(func.min(EmResult.sampled_at)).where(
        *same, EmResult.sampled_at > result.sampled_at))
    return Window(start, end)


def affected_uses(session: Session, result: EmResult) -> list[RoomUse]:
    """The room uses inside the result's excursion window, oldest first."""
    window = excursion_window(session, result)
    statement = select(RoomUse).where(RoomUse.room_code == result.room_code)
    if window.start is not None:
        statement = statement.where(RoomUse.at > window.start)
    if window.end is not None:
        statement = statement.where(RoomUse.at < window.end)
    return list(session.scalars(statement.order_by(RoomUse.id)))


def link_excursion(session: Session, result: EmResult) -> list[EmExcursionDeviation]:
    """Open the deviation of a failed result on each affected batch not linked yet (one per
    batch and excursion: the unique key backs it), batches in number order (one lock
    order). A rejected batch gets a link with a note and no deviation (nothing of it will
    be given); a released one gets its deviation and a critical alert to QA (the product
    may have been given: Part IV §14)."""
    if result.passed:
        return []
    room = get_room(session, result.room_code)
    linked = set(session.scalars(select(EmExcursionDeviation.batch_number).where(
        EmExcursionDeviation.em_result_id == result.id)))
    steps: dict[str, list[RoomUse]] = {}
    for use in affected_uses(session, result):
        if use.batch_number not in linked:
            steps.setdefault(use.batch_number, []).append(use)
    new: list[EmExcursionDeviation] = []
    for batch_number in sorted(steps):
        uses = steps[batch_number]
        batch = batches.get_batch(session, batch_number, for_update=True)
        link = EmExcursionDeviation(em_result_id=result.id, batch_number=batch_number,
                                    linked_at=utcnow())
        if batch.status == "rejected":
            link.note = "batch rejected: no deviation opened (nothing of it will be given)"
        else:
            codes = ", ".join(dict.fromkeys(use.step_code for use in uses))
            deviation = batches.open_deviation(
                session, batch_number, severity=_severity(result.grade),
                description=(f"{_result_text(room, result)}: above the Annex 1 action limit "
                             f"{result.action_limit} {unit_of(result.sample_type)}; this "
                             f"batch's steps {codes} were in the room since the last passed "
                             f"{_words(result.sample_type)} result (EU GMP Annex 1 §9)"),
                user_id=result.recorded_by, step_code=uses[0].step_code,
                kind="automatic")
            link.deviation_number = deviation.number
            if batch.status in ("released", "conditionally_released"):
                alerts.raise_alert(session, AlertSpec(
                    cause=f"{RELEASED}:{result.id}:{batch_number}", kind=RELEASED,
                    severity=Severity.CRITICAL.value, subject_type="batch",
                    subject_id=batch_number, roles=("qa",), site_code=room.site_code,
                    message=f"{_result_text(room, result)} affects batch {batch_number}, "
                            f"already {batch.status.replace('_', ' ')}: deviation "
                            f"{deviation.number} opened; assess the product given"))
        session.add(link)
        session.flush()
        new.append(link)
    return new


def released_batches(session: Session, result: EmResult) -> list[str]:
    """The batches of a result's links with a released-batch alert."""
    causes = session.scalars(select(alerts.Alert.subject_id).where(
        alerts.Alert.cause.like(f"{RELEASED}:{result.id}:%")).order_by(alerts.Alert.id))
    return list(causes)


def links_of_result(session: Session, result_id: int) -> list[EmExcursionDeviation]:
    return list(session.scalars(select(EmExcursionDeviation).where(
        EmExcursionDeviation.em_result_id == result_id).order_by(EmExcursionDeviation.id)))


def excursions_of_batch(session: Session, batch_number: str) -> list[EmExcursionDeviation]:
    """The EM excursions that affected a batch, oldest first (the batch record)."""
    return list(session.scalars(select(EmExcursionDeviation).where(
        EmExcursionDeviation.batch_number == batch_number).order_by(EmExcursionDeviation.id)))


def sweep_excursions(session: Session, now: datetime | None = None) -> list[str]:
    """Link the batches that entered a room inside a recent excursion's window after its
    entry (or concurrently with it); one line per new link. Reruns add nothing."""
    since = (now or utcnow()) - SWEEP_LOOKBACK
    ids = list(session.scalars(select(EmResult.id).where(
        EmResult.passed.is_(False), EmResult.sampled_at >= since).order_by(EmResult.id)))
    lines: list[str] = []
    for result_id in ids:
        # The result row serialises two sweeps linking the same excursion.
        result = session.scalar(lock_rows(select(EmResult).where(EmResult.id == result_id),
                                          EmResult))
        assert result is not None
        for link in link_excursion(session, result):
            lines.append(f"rooms em_excursion:{result.id} -> {link.batch_number} "
                         f"{link.deviation_number or link.note}")
    return lines


def results_of(session: Session, room_code: str, sample_type: str, *,
               limit: int = 500) -> list[EmResult]:
    """The newest ``limit`` results of a type in a room, oldest first (the trend)."""
    rows = list(session.scalars(select(EmResult).where(
        EmResult.room_code == normal_code(room_code), EmResult.sample_type == sample_type)
        .order_by(EmResult.sampled_at.desc(), EmResult.id.desc()).limit(limit)))
    return list(reversed(rows))
