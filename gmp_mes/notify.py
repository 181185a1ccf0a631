"""Alert delivery: in-app always (the alert rows are the in-app channel), e-mail through
``GMP_MES_SMTP_URL`` and a signed JSON webhook to ``GMP_MES_WEBHOOK_URL``.

Delivery never blocks a sweep: the sweep commits its alerts first; the scheduler host's
:class:`Notifier` thread, woken after every round of jobs, sends them afterwards, and
``gmp-mes sweep`` makes one delivery pass after its jobs committed. Every attempt is one
row of the append-only ``alert_delivery`` table (who or where, when, outcome, error). A
failed attempt is retried with exponential backoff (``backoff * 2**(attempt - 1)``) up to
:data:`MAX_ATTEMPTS`, then given up and logged as an error. Only one deliverer works at
a time across processes (a PostgreSQL advisory lock, a file lock on SQLite), so a manual
sweep next to a running scheduler never sends an alert twice. Sending happens outside
any database transaction; the attempt is recorded right after it (at-least-once: a crash
between sending and recording can repeat that one message).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import logging
import smtplib
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from flask import Flask
from sqlalchemy import and_, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gmp_mes.alerts import Alert, AlertDelivery, Channel, DeliveryOutcome
from gmp_mes.audit import canonical_json, jsonable
from gmp_mes.clock import utcnow
from gmp_mes.db import Database
from gmp_mes.models import Site, User, UserRole

log = logging.getLogger("gmp_mes.notify")

MAX_ATTEMPTS = 6
DEFAULT_BACKOFF_SECONDS = 30.0
# Alerts older than this when a channel first sees them are not sent retroactively
# (e.g. a webhook configured today does not replay last year's alerts).
LOOKBACK = timedelta(days=1)
BATCH = 200
TIMEOUT_SECONDS = 10.0
DELIVERY_LOCK_KEY = 7_470_003
SIGNATURE_HEADER = "X-GMP-Signature"


# --- channels ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    sender: str
    use_ssl: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = None

    @property
    def display(self) -> str:
        return f"{'smtps' if self.use_ssl else 'smtp'}://{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpTarget:
    """``smtp://[user:pass@]host[:port]?from=addr[&starttls=true]`` or ``smtps://...``."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError(f"GMP_MES_SMTP_URL must look like smtp://host:port?from=addr, not {url!r}")
    query = parse_qs(parts.query)
    use_ssl = parts.scheme == "smtps"
    try:
        port = parts.port or (465 if use_ssl else 25)
    except ValueError as exc:
        raise ValueError(f"GMP_MES_SMTP_URL: bad port in {url!r}") from exc
    return SmtpTarget(
        host=parts.hostname,
        port=port,
        sender=query.get("from", ["gmp-mes@localhost"])[0],
        use_ssl=use_ssl,
        starttls=query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes"),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def alert_document(alert: Alert) -> dict[str, Any]:
    """What an alert looks like outside: the webhook body and the e-mail's facts."""
    return jsonable(
        {
            "id": alert.id,
            "cause": alert.cause,
            "kind": alert.kind,
            "severity": alert.severity,
            "subject_type": alert.subject_type,
            "subject_id": alert.subject_id,
            "message": alert.message,
            "due_at": alert.due_at,
            "site_code": alert.site_code,
            "roles": alert.role_list,
            "status": alert.status,
            "created_at": alert.created_at,
        }
    )


def webhook_body(alert: Alert) -> bytes:
    return canonical_json(alert_document(alert)).encode()


def sign_body(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of the raw body>`` keyed with the installation secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    return hmac.compare_digest(sign_body(secret, body), header or "")


def send_webhook(url: str, secret: str, alert: Alert, attempt: int) -> str:
    """POST the alert; returns a short description, raises DeliveryFailed otherwise."""
    body = webhook_body(alert)
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "gmp-mes",
            SIGNATURE_HEADER: sign_body(secret, body),
            "X-GMP-Alert-Id": str(alert.id),
            "X-GMP-Delivery-Attempt": str(attempt),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from exc
    if not 200 <= status < 300:
        raise DeliveryFailed(f"HTTP {status}")
    return f"HTTP {status}"


def email_message(alert: Alert, sender: str, recipients: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = (
        f"[gmp-mes] {alert.severity.upper()} {alert.kind}: {alert.subject_type} {alert.subject_id}"
    )
    message["X-GMP-Alert-Id"] = str(alert.id)
    due = alert.due_at.strftime("%Y-%m-%d %H:%M UTC") if alert.due_at else "-"
    message.set_content(
        f"{alert.message}\n\n"
        f"Kind: {alert.kind}\nSeverity: {alert.severity}\n"
        f"Subject: {alert.subject_type} {alert.subject_id}\nSite: {alert.site_code or '-'}\n"
        f"Due: {due}\nAlert: #{alert.id} ({alert.cause})\n\n"
        "Acknowledge it on the Alerts page of gmp-mes.\n"
    )
    return message


def send_email(target: SmtpTarget, alert: Alert, recipients: list[str]) -> str:
    message = email_message(alert, target.sender, recipients)
    try:
        if target.use_ssl:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                target.host,
                target.port,
                timeout=TIMEOUT_SECONDS,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(target.host, target.port, timeout=TIMEOUT_SECONDS)
        with smtp:
            if target.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if target.username:
                smtp.login(target.username, target.password or "")
            refused = smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
    if refused:
        return f"sent; refused by the server: {', '.join(sorted(refused))}"
    return f"sent to {len(recipients)} recipient(s)"


class DeliveryFailed(Exception):
    """One attempt failed (network, refused, non-2xx); a retry may follow."""


def recipients(session: Session, alert: Alert) -> list[str]:
    """E-mail addresses of the active users holding one of the alert's roles at its site."""
    statement = (
        select(User.email)
        .join(UserRole, UserRole.user_id == User.id)
        .join(Site, Site.id == User.site_id)
        .where(
            User.active.is_(True),
            User.email.is_not(None),
            UserRole.role.in_(alert.role_list),
        )
        .distinct()
    )
    if alert.site_code:
        statement = statement.where(Site.code == alert.site_code)
    return sorted(email for email in session.scalars(statement) if email)


# --- the delivery queue --------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    alert_id: int
    channel: str
    attempt: int  # the number of the attempt to make now (1 = first)


@dataclass
class DeliveryReport:
    attempted: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    next_due: datetime | None = None
    lines: list[str] = field(default_factory=list)


def configured_channels(app: Flask) -> list[str]:
    settings = app.config["GMP_SETTINGS"]
    channels = []
    if settings.smtp_url:
        channels.append(Channel.EMAIL.value)
    if settings.webhook_url:
        channels.append(Channel.WEBHOOK.value)
    return channels


def backoff_seconds(app: Flask) -> float:
    return float(app.config.get("GMP_NOTIFY_BACKOFF_SECONDS", DEFAULT_BACKOFF_SECONDS))


def _recent_floor(now: datetime) -> Any:
    """The first alert inside the look-back window: older deliveries are never read
    again, so the queue's queries stay small however long the history grows."""
    return select(func.min(Alert.id)).where(Alert.created_at >= now - LOOKBACK).scalar_subquery()


def _last_attempts(channel: str, now: datetime) -> Any:
    return (
        select(AlertDelivery.alert_id, func.max(AlertDelivery.attempt).label("attempt"))
        .where(AlertDelivery.channel == channel, AlertDelivery.alert_id >= _recent_floor(now))
        .group_by(AlertDelivery.alert_id)
        .subquery()
    )


def due_deliveries(
    session: Session, channel: str, now: datetime, *, limit: int = BATCH
) -> list[Due]:
    """Alerts with no attempt yet on ``channel``, or whose last attempt failed and is due again."""
    latest = _last_attempts(channel, now)
    last = AlertDelivery.__table__.alias("last")
    statement = (
        select(Alert.id, latest.c.attempt)
        .outerjoin(latest, latest.c.alert_id == Alert.id)
        .outerjoin(
            last,
            and_(
                last.c.alert_id == Alert.id,
                last.c.channel == channel,
                last.c.attempt == latest.c.attempt,
            ),
        )
        .where(
            Alert.created_at >= now - LOOKBACK,
            latest.c.attempt.is_(None)
            | (last.c.final.is_(False) & (last.c.next_attempt_at <= now)),
        )
        .order_by(Alert.id)
        .limit(limit)
    )
    # The columns selected, typed (mypy unpacks a Row as object).
    rows = cast("Iterable[tuple[int, int | None]]", session.execute(statement))
    return [Due(alert_id, channel, (attempt or 0) + 1) for alert_id, attempt in rows]


def next_retry(session: Session, channels: list[str], now: datetime) -> datetime | None:
    """The earliest time a pending retry falls due (None: nothing waits)."""
    if not channels:
        return None
    latest = (
        select(
            AlertDelivery.alert_id,
            AlertDelivery.channel,
            func.max(AlertDelivery.attempt).label("attempt"),
        )
        .where(AlertDelivery.channel.in_(channels), AlertDelivery.alert_id >= _recent_floor(now))
        .group_by(AlertDelivery.alert_id, AlertDelivery.channel)
        .subquery()
    )
    statement = (
        select(func.min(AlertDelivery.next_attempt_at))
        .join(
            latest,
            and_(
                latest.c.alert_id == AlertDelivery.alert_id,
                latest.c.channel == AlertDelivery.channel,
                latest.c.attempt == AlertDelivery.attempt,
            ),
        )
        .where(AlertDelivery.final.is_(False))
    )
    return session.scalar(statement)


@contextmanager
def delivery_lock(app: Flask) -> Iterator[bool]:
    """Non-blocking: yields False when another process is delivering right now."""
    db: Database = app.extensions["gmp_mes.db"]
    if db.dialect == "postgresql":
        with db.engine.connect() as connection:
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": DELIVERY_LOCK_KEY}
            ).scalar()
            connection.commit()
            try:
                yield bool(got)
            finally:
                if got:
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": DELIVERY_LOCK_KEY}
                    )
                    connection.commit()
        return
    path = Path(app.config["GMP_SETTINGS"].instance_path) / "notify.lock"
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def deliver_pending(app: Flask) -> DeliveryReport:
    """One pass over every configured channel: make each due attempt and record it."""
    report = DeliveryReport()
    channels = configured_channels(app)
    if not channels:
        return report
    db: Database = app.extensions["gmp_mes.db"]
    with delivery_lock(app) as mine:
        if not mine:
            log.info("delivery: another process is delivering; skipped")
            return report
        for channel in channels:
            while True:
                with db.session(write=False) as session:
                    dues = due_deliveries(session, channel, utcnow())
                for due in dues:
                    _attempt(app, db, due, report)
                if len(dues) < BATCH:
                    break
        with db.session(write=False) as session:
            report.next_due = next_retry(session, channels, utcnow())
    return report


def _attempt(app: Flask, db: Database, due: Due, report: DeliveryReport) -> None:
    settings = app.config["GMP_SETTINGS"]
    with db.session(write=False) as session:
        alert = session.get(Alert, due.alert_id)
        assert alert is not None  # alerts are never deleted (database guard)
        to = recipients(session, alert) if due.channel == Channel.EMAIL.value else []
        session.expunge(alert)
    outcome, detail, target = DeliveryOutcome.SENT.value, "", ""
    try:
        if due.channel == Channel.EMAIL.value:
            smtp = parse_smtp_url(settings.smtp_url)
            target = ", ".join(to) or "(no recipient)"
            if not to:
                outcome, detail = (
                    DeliveryOutcome.SKIPPED.value,
                    ("no active user with an e-mail address holds the alert's roles at its site"),
                )
            else:
                detail = f"{smtp.display}: {send_email(smtp, alert, to)}"
        else:
            split = urlsplit(settings.webhook_url)
            target = f"{split.scheme}://{split.hostname}{f':{split.port}' if split.port else ''}"
            target += split.path
            detail = send_webhook(settings.webhook_url, settings.secret_key, alert, due.attempt)
    except (DeliveryFailed, ValueError) as exc:
        outcome, detail = DeliveryOutcome.FAILED.value, str(exc)
    now = utcnow()
    final = outcome != DeliveryOutcome.FAILED.value or due.attempt >= MAX_ATTEMPTS
    next_at = (
        None if final else now + timedelta(seconds=backoff_seconds(app) * 2 ** (due.attempt - 1))
    )
    try:
        with db.transaction() as session:
            session.add(
                AlertDelivery(
                    alert_id=due.alert_id,
                    channel=due.channel,
                    attempt=due.attempt,
                    target=target[:2000],
                    attempted_at=now,
                    outcome=outcome,
                    detail=detail[:2000],
                    next_attempt_at=next_at,
                    final=final,
                )
            )
    except IntegrityError:
        # Another deliverer recorded this attempt (the lock makes this unexpected).
        log.warning(
            "delivery attempt %s of alert %s on %s was already recorded",
            due.attempt,
            due.alert_id,
            due.channel,
        )
        return
    report.attempted += 1
    if outcome == DeliveryOutcome.SENT.value:
        report.sent += 1
    elif outcome == DeliveryOutcome.SKIPPED.value:
        report.skipped += 1
    else:
        report.failed += 1
    line = f"alert {due.alert_id}: {due.channel} attempt {due.attempt} {outcome} ({detail})"
    report.lines.append(line)
    if outcome == DeliveryOutcome.FAILED.value and final:
        log.error("%s; giving up after %s attempts", line, due.attempt)
    else:
        log.info("%s", line)


class Notifier:
    """Background deliverer of the scheduler host: woken after each round of jobs and
    when a retry falls due; only delivers while ``is_active()`` (the host is leader)."""

    def __init__(self, app: Flask, is_active: Callable[[], bool], idle_seconds: float) -> None:
        self.app = app
        self.is_active = is_active
        self.idle_seconds = idle_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gmp-mes-notify", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        wait = self.idle_seconds
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                break
            wait = self.idle_seconds
            if not self.is_active():
                continue
            try:
                report = deliver_pending(self.app)
            except Exception:  # the deliverer must survive a bad pass; it retries later
                log.exception("alert delivery pass failed")
                continue
            if report.next_due is not None:
                left = (report.next_due - utcnow()).total_seconds()
                wait = min(self.idle_seconds, max(left, 0.05))
