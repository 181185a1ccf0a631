"""Users, sites, login, lockout, passwords, API tokens and page sessions (the core's
account services).

21 CFR 11.100(a): an electronic signature is unique to one person and never
reassigned, so user names are never deleted or reused: users are deactivated.
21 CFR 11.300(b): passwords follow a policy, expire when configured, and one an
administrator set is one-time. 21 CFR 11.300(d): failed attempts are recorded, rate
limited per account and per client, lock the account, and are reported to admins at
once. Annex 11 §12: tokens and sessions are revocable on the server, and end when the
account is deactivated or locked or its password changes.

Longer than 500 lines on purpose: login, lockout, password policy and sessions are one
state machine of the account (a lockout, a deactivation or a password change ends every
session and token), kept in one module so that no path changes one without the others.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, TypeAlias, cast
from zoneinfo import available_timezones

from sqlalchemy import Connection, CursorResult, Row, bindparam, select, update
from sqlalchemy.orm import Session

from gmp_mes import audit
from gmp_mes.alerts import AlertSpec, raise_alert
from gmp_mes.clock import utcnow
from gmp_mes.db import lock_rows
from gmp_mes.errors import (
    AccountInactive,
    AccountLocked,
    AlreadyExists,
    Conflict,
    FollowUp,
    InvalidCredentials,
    NotFound,
    PasswordChangeRequired,
    RateLimited,
    ValidationFailed,
)
from gmp_mes.models import (
    ApiToken,
    CredentialKind,
    DecimalSeparator,
    Role,
    Site,
    SiteKind,
    User,
    UserRole,
)
from gmp_mes.passwords import (
    MIN_LENGTH,
    check_password,
    hash_password,
    one_time_password,
    password_problems,
)
from gmp_mes.ratelimit import DEFAULT as DEFAULT_LIMITS
from gmp_mes.ratelimit import Limits, printable

MAX_FAILED_LOGINS = 5
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
EMAIL = re.compile(r"^[^@\s<>,;\"]{1,64}@[A-Za-z0-9.-]{1,189}\.[A-Za-z]{2,63}$")


@dataclass(frozen=True)
class Policy:
    """The configured account rules, carried in every session's ``info["policy"]``
    (put there by the application factory from the settings)."""

    max_failed: int = MAX_FAILED_LOGINS
    limits: Limits = DEFAULT_LIMITS
    password_min_length: int = MIN_LENGTH
    password_max_age: timedelta | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> Policy:
        days = settings.password_max_age_days
        return cls(
            max_failed=settings.max_failed_logins,
            limits=Limits.of(settings.rate_limit_account, settings.rate_limit_client),
            password_min_length=settings.password_min_length,
            password_max_age=timedelta(days=days) if days else None,
        )


def policy(session: Session) -> Policy:
    return session.info.get("policy") or Policy()


def client_of(session: Session) -> str | None:
    """The calling client's address, when the session serves a request."""
    return session.info.get("client")


def create_site(
    session: Session, code: str, *, kind: str, name: str, timezone: str = "UTC",
    decimal_separator: str = DecimalSeparator.POINT.value,
) -> Site:
    code = code.strip().upper()
    errors: dict[str, list[str]] = {}
    if not code or len(code) > 32 or not code.replace("-", "").isalnum():
        errors["code"] = ["must be 1-32 letters, digits or dashes"]
    if kind not in {k.value for k in SiteKind}:
        errors["kind"] = [f"must be one of {', '.join(k.value for k in SiteKind)}"]
    if not name.strip():
        errors["name"] = ["must not be empty"]
    elif _control_characters(name):
        errors["name"] = [CONTROL_MESSAGE]
    if timezone not in _timezones():
        # Pages and labels show the site's local time: an unknown zone would break them.
        errors["timezone"] = ["must be an IANA time zone such as Europe/Berlin or UTC"]
    if decimal_separator not in _SEPARATORS:
        errors["decimal_separator"] = [SEPARATOR_MESSAGE]
    if errors:
        raise ValidationFailed("invalid site", errors=errors)
    if session.scalar(select(Site).where(Site.code == code)):
        raise AlreadyExists(f"site {code} already exists")
    site = Site(code=code, kind=kind, name=name.strip(), timezone=timezone,
                decimal_separator=decimal_separator)
    session.add(site)
    session.flush()
    return site


_SEPARATORS = frozenset(s.value for s in DecimalSeparator)
SEPARATOR_MESSAGE = 'must be "." (decimal point) or "," (decimal comma)'


def set_decimal_separator(session: Session, code: str, separator: str) -> Site:
    """How the site's people write decimals in page forms (issue 15); the point is always
    accepted as well. Audited as an update of the site (its after-flush event)."""
    if separator not in _SEPARATORS:
        raise ValidationFailed("invalid decimal separator",
                               errors={"decimal_separator": [SEPARATOR_MESSAGE]})
    site = session.scalar(lock_rows(select(Site).where(Site.code == code.strip().upper()), Site))
    if site is None:
        raise NotFound(f"site {code} not found")
    if site.decimal_separator != separator:
        site.decimal_separator = separator
        session.flush()
    return site


CONTROL_MESSAGE = "must not contain control characters"


def _control_characters(text: str) -> bool:
    """Printed names appear on signatures and labels; NUL cannot even be stored by
    PostgreSQL. Control characters are refused instead of failing at the database."""
    return any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in text)


@cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def list_sites(session: Session) -> list[Site]:
    return list(session.scalars(select(Site).order_by(Site.code)))


def list_users(session: Session) -> list[User]:
    """Every user, active ones first (deactivated names stay listed: never reused)."""
    return list(session.scalars(select(User).order_by(User.active.desc(), User.username)))


def get_site(session: Session, code: str) -> Site:
    site = session.scalar(select(Site).where(Site.code == code.strip().upper()))
    if site is None:
        raise NotFound(f"no site {code!r}")
    return site


def create_user(
    session: Session,
    username: str,
    *,
    password: str,
    roles: Iterable[str],
    site_code: str,
    full_name: str | None = None,
    email: str | None = None,
    must_change: bool = False,
) -> User:
    """Create a user. ``must_change``: the password was set by an administrator (API,
    page, ``users create --must-change``) and is one-time (21 CFR 11.300(b))."""
    username = username.strip().lower()
    email = _clean_email(email)
    roles = sorted(set(roles))
    errors: dict[str, list[str]] = {}
    if not USERNAME.match(username):
        errors["username"] = ["must be 1-64 letters, digits, dots, dashes or underscores"]
    unknown = [r for r in roles if r not in {x.value for x in Role}]
    if not roles or unknown:
        errors["roles"] = [f"each role must be one of {', '.join(r.value for r in Role)}"]
    if problems := password_problems(
        password, username=username, min_length=policy(session).password_min_length
    ):
        errors["password"] = problems
    if email is not None and (problem := _email_problem(email)):
        errors["email"] = [problem]
    if full_name is not None and _control_characters(full_name):
        errors["full_name"] = [CONTROL_MESSAGE]
    if errors:
        raise ValidationFailed("invalid user", errors=errors)
    site = get_site(session, site_code)
    # A name once used is never given to anyone else, even after deactivation.
    if session.scalar(select(User.id).where(User.username == username)):
        raise AlreadyExists(f"user name {username!r} is taken and can never be reused")
    user = User(
        username=username,
        full_name=(full_name or username).strip(),
        email=email,
        site=site,
        password_hash=hash_password(password),
        active=True,
        failed_logins=0,
        must_change_password=must_change,
        password_changed_at=utcnow(),
    )
    user.role_rows = [UserRole(role=role) for role in roles]
    session.add(user)
    session.flush()
    return user


def _clean_email(email: str | None) -> str | None:
    """Trimmed; blank means no address."""
    return email.strip() if email and email.strip() else None


def _email_problem(email: str) -> str | None:
    if not EMAIL.match(email) or _control_characters(email):
        return "must be an e-mail address like name@example.org"
    return None


def set_email(session: Session, username: str, email: str | None) -> User:
    """Change (or, with None or blank, remove) where the user's alert e-mails go."""
    email = _clean_email(email)
    if email is not None and (problem := _email_problem(email)):
        raise ValidationFailed("invalid e-mail address", errors={"email": [problem]})
    user = get_user(session, username, for_update=True)
    user.email = email
    session.flush()
    return user


def get_user(session: Session, username: str, *, for_update: bool = False) -> User:
    query = select(User).where(User.username == username.strip().lower())
    if for_update:
        query = query.with_for_update(of=User)
    user = session.scalar(query)
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def record_failure(
    username: str,
    max_failed: int | None = None,
    *,
    client: str | None = None,
    limits: Limits | None = None,
) -> FollowUp:
    """A follow-up that counts a failed password, run after the failed request rolled back.

    The failure is counted on the rate limits first; only a failure within them counts
    toward lockout, so nobody can lock an account faster than the limits allow (a
    failure beyond them raced the check in front of the password). A lockout or a
    used-up limit raises an alert to the administrators at once (21 CFR 11.300(d)).
    """
    typed = username.strip().lower()
    name = printable(typed, 64)

    def follow_up(session: Session) -> None:
        rules = policy(session)
        maximum = max_failed or rules.max_failed
        counted, exhausted = (limits or rules.limits).count_failure(
            session.connection(), name, client
        )
        for scope in exhausted:
            _burst_alert(session, scope, name, client)
        user = find_user(session, typed, for_update=True)
        if user is None:
            audit.record(
                session, "auth.failed", "user", name[:80], new={"known": False, "client": client}
            )
            return
        session.info["actor"] = audit.Actor(user.username, user.id, user.full_name)
        if counted:
            user.failed_logins += 1
        newly_locked = user.failed_logins >= maximum and user.locked_at is None
        if newly_locked:
            user.locked_at = utcnow()
        session.flush()
        audit.record(
            session, "auth.failed", "user", user.username,
            new={"failed": user.failed_logins, "counted": counted, "client": client},
        )
        if newly_locked:
            revoke_all(session, user, "account locked after failed passwords")
            _lockout_alert(session, user, client)

    return follow_up


def _lockout_alert(session: Session, user: User, client: str | None) -> None:
    locked = audit.format_time(user.locked_at) if user.locked_at else ""
    raise_alert(session, AlertSpec(
        cause=f"account_locked:{user.username}:{locked}",
        kind="account_locked", severity="major", subject_type="user",
        subject_id=user.username,
        message=(f"Account {user.username} locked after {user.failed_logins} failed "
                 f"passwords (last from {client or 'an unknown client'}); an administrator "
                 "must confirm the person's identity before unlocking it."),
        roles=("admin",),
    ))


def _burst_alert(session: Session, scope: str, name: str, client: str | None) -> None:
    """One alert per used-up window: a burst of failed passwords."""
    window = int(utcnow().timestamp()) // 60
    subject = name if scope == "account" else (client or "unknown")
    what = f"for the user name {name!r}" if scope == "account" else f"from client {subject}"
    raise_alert(session, AlertSpec(
        cause=f"auth_burst:{scope}:{subject[:100]}:{window}",
        kind="auth_failures_burst", severity="warning",
        subject_type="user" if scope == "account" else "client",
        subject_id=subject[:80],
        message=f"Failed passwords {what} reached the rate limit; further attempts are "
                "refused for a while (possible guessing or an attack on the account).",
        roles=("admin",),
    ))


def find_user(session: Session, name: str, *, for_update: bool = False) -> User | None:
    """The user of a typed name, or None; a name no user can have (control characters,
    NUL, which PostgreSQL cannot even compare) is not looked up at all."""
    if not USERNAME.match(name):
        return None
    query = select(User).where(User.username == name)
    return session.scalar(query.with_for_update(of=User) if for_update else query)


def check_rate(session: Session, username: str) -> None:
    """429 ``rate_limited`` when failed passwords used up a limit for this name or client
    (read only: nothing is written for a refused attempt)."""
    wait = policy(session).limits.blocked(session.connection(), username, client_of(session))
    if wait is not None:
        raise RateLimited(
            f"too many failed passwords; try again in {wait} seconds", retry_after=wait
        )


def failure_follow_up(session: Session, username: str, max_failed: int | None = None) -> FollowUp:
    return record_failure(
        username, max_failed, client=client_of(session), limits=policy(session).limits
    )


def password_change_due(session: Session, user: User) -> str | None:
    """Why the user must change the password before getting a token or session."""
    if user.must_change_password:
        return "the password was set by an administrator and is one-time"
    max_age = policy(session).password_max_age
    changed = user.password_changed_at or user.created_at
    if max_age is not None and changed + max_age <= utcnow():
        return "the password has expired"
    return None


def authenticate(
    session: Session, username: str, password: str, *, max_failed: int | None = None
) -> User:
    """Check a password; failures count toward lockout even though the request fails.
    A correct one-time or expired password gives 403 ``password_change_required``."""
    name = (username or "").strip().lower()
    check_rate(session, name)
    user = find_user(session, name)
    valid = check_password(user.password_hash if user else None, password or "")
    if user is None or not valid:
        raise InvalidCredentials(
            "wrong user name or password",
            follow_up=failure_follow_up(session, name, max_failed),
        )
    if user.locked_at is not None:
        raise AccountLocked(f"account {name} is locked; an administrator must unlock it")
    if not user.active:
        raise AccountInactive(f"account {name} is deactivated")
    if reason := password_change_due(session, user):
        raise PasswordChangeRequired(
            f"{reason}: change it first (POST /api/v1/auth/password or /account/password)"
        )
    if user.failed_logins:
        user.failed_logins = 0
    return user


def issue_token(
    session: Session, user: User, ttl: timedelta, *, kind: str = CredentialKind.TOKEN.value
) -> tuple[str, datetime]:
    """A new bearer token (or, with ``kind="session"``, a page session id): the secret
    is returned once, only its digest is stored."""
    token = secrets.token_urlsafe(32)
    expires_at = utcnow() + ttl
    session.add(ApiToken(user_id=user.id, token_digest=_digest(token), expires_at=expires_at,
                         kind=kind))
    session.flush()
    return token, expires_at


def start_session(session: Session, user: User, lifetime: timedelta) -> str:
    """A page login: the absolute lifetime is on the server; the idle timeout on top."""
    secret, _ = issue_token(session, user, lifetime, kind=CredentialKind.SESSION.value)
    audit.record(session, "auth.session_started", "user", user.username,
                 new={"expires_in_minutes": int(lifetime.total_seconds() // 60)})
    return secret


def _revoke(session: Session, token: ApiToken, reason: str) -> None:
    token.revoked_at = utcnow()
    token.revoke_reason = reason[:200]
    session.flush()
    audit.record(session, "auth.revoked", "user", token.user.username,
                 new={"credential": token.id, "kind": token.kind, "reason": reason[:200]})


def revoke_secret(session: Session, secret: str, reason: str) -> bool:
    """End the token or session with this secret (logout, ``DELETE /auth/tokens/current``);
    False when it was unknown or already ended."""
    token = session.scalar(
        select(ApiToken).where(ApiToken.token_digest == _digest(secret)).with_for_update(
            of=ApiToken)
    )
    if token is None or token.revoked_at is not None:
        return False
    _revoke(session, token, reason)
    return True


def revoke_all(session: Session, user: User, reason: str) -> int:
    """End every open token and session of the user at once; the number ended."""
    now = utcnow()
    # An UPDATE's result is a CursorResult (with rowcount); Session.execute names the base.
    ended = cast("CursorResult[Any]", session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None),
               ApiToken.expires_at > now)
        .values(revoked_at=now, revoke_reason=reason[:200])
        .execution_options(synchronize_session=False)
    )).rowcount or 0
    if ended:
        audit.record(session, "auth.revoked_all", "user", user.username,
                     new={"ended": ended, "reason": reason[:200]})
    return ended


def list_credentials(session: Session, username: str) -> list[ApiToken]:
    """The user's tokens and sessions, newest first (never their secrets)."""
    user = get_user(session, username)
    return list(session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id)
        .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    ))


def revoke_credential(session: Session, username: str, credential_id: int, reason: str) -> ApiToken:
    """An administrator ends one token or session of the user."""
    user = get_user(session, username)
    token = session.scalar(
        select(ApiToken).where(ApiToken.id == credential_id, ApiToken.user_id == user.id)
        .with_for_update(of=ApiToken)
    )
    if token is None:
        raise NotFound(f"user {user.username} has no token or session {credential_id}")
    if token.revoked_at is not None:
        raise Conflict(f"token {credential_id} was already revoked")
    _revoke(session, token, reason)
    return token


def change_password(
    session: Session, username: str, current_password: str, new_password: str
) -> User:
    """The person changes their own password, proving the current one (a one-time
    password too). Every token and session of theirs ends (Annex 11 §12)."""
    name = (username or "").strip().lower()
    check_rate(session, name)
    user = find_user(session, name, for_update=True)
    valid = check_password(user.password_hash if user else None, current_password or "")
    if user is None or not valid:
        raise InvalidCredentials(
            "wrong user name or current password", errors={"current_password": [
                "wrong user name or current password"]},
            follow_up=failure_follow_up(session, name),
        )
    if user.locked_at is not None:
        raise AccountLocked(f"account {name} is locked; an administrator must unlock it")
    if not user.active:
        raise AccountInactive(f"account {name} is deactivated")
    problems = password_problems(
        new_password or "", username=name, min_length=policy(session).password_min_length
    )
    if new_password == current_password:
        problems.append("must differ from the current password")
    if problems:
        raise ValidationFailed("the new password is not accepted",
                               errors={"new_password": problems})
    session.info["actor"] = audit.Actor(user.username, user.id, user.full_name)
    with audit.reason(session, "password changed by its owner"):
        user.password_hash = hash_password(new_password)
        user.must_change_password = False
        user.password_changed_at = utcnow()
        user.failed_logins = 0
        session.flush()
    revoke_all(session, user, "password changed")
    return user


def reset_password(session: Session, username: str, *, by_user_id: int | None = None
                   ) -> tuple[User, str]:
    """An administrator gives the user a one-time password (shown once, never stored
    in clear); it must be changed before it gives a token or a session."""
    user = get_user(session, username, for_update=True)
    if by_user_id is not None and user.id == by_user_id:
        raise Conflict("change your own password with your current one, not by a reset")
    if not user.active:
        raise Conflict(f"account {user.username} is deactivated")
    password = one_time_password()
    with audit.reason(session, "password reset by an administrator (one-time password)"):
        user.password_hash = hash_password(password)
        user.must_change_password = True
        user.password_changed_at = utcnow()
        session.flush()
    revoke_all(session, user, "password reset by an administrator")
    return user, password


@dataclass(frozen=True, slots=True)
class SiteRef:
    """The caller's home site, as the request saw it."""

    id: int
    code: str
    name: str
    timezone: str
    decimal_separator: str = DecimalSeparator.POINT.value


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an immutable snapshot of an active, unlocked user, taken once per
    request by one Core query (no ORM identity map). Services that change or sign as
    the user load the ``User`` row itself, with its current state."""

    id: int
    username: str
    full_name: str
    site: SiteRef
    roles: frozenset[str]

    def has_role(self, *roles: str) -> bool:
        return not self.roles.isdisjoint(roles)


# A person acting: the request's Principal, or a User row (CLI, scheduler, tests).
Person: TypeAlias = "Principal | User"

_user, _site, _token, _role = (User.__table__, Site.__table__, ApiToken.__table__,
                               UserRole.__table__)
_PRINCIPAL = (
    select(_user.c.id, _user.c.username, _user.c.full_name, _site.c.id, _site.c.code,
           _site.c.name, _site.c.timezone, _site.c.decimal_separator, _role.c.role)
    .select_from(_user.join(_site, _site.c.id == _user.c.site_id)
                 .outerjoin(_role, _role.c.user_id == _user.c.id))
    .where(_user.c.active.is_(True), _user.c.locked_at.is_(None))
)
_BY_TOKEN = _PRINCIPAL.join_from(_user, _token, _token.c.user_id == _user.c.id).where(
    _token.c.token_digest == bindparam("digest"), _token.c.expires_at > bindparam("now"),
    _token.c.revoked_at.is_(None), _token.c.kind == bindparam("kind"),
)


def principal_for_token(connection: Connection, token: str) -> Principal | None:
    """The active, unlocked user a valid, unexpired token belongs to (one query)."""
    rows = connection.execute(
        _BY_TOKEN, {"digest": _digest(token), "now": utcnow(), "kind": CredentialKind.TOKEN}
    ).all()
    return _principal(rows)


def principal_for_session(connection: Connection, secret: str) -> Principal | None:
    """The user of an open (not revoked, not past its absolute lifetime) page session."""
    rows = connection.execute(
        _BY_TOKEN, {"digest": _digest(secret), "now": utcnow(), "kind": CredentialKind.SESSION}
    ).all()
    return _principal(rows)


def _principal(rows: Sequence[Row[*tuple[Any, ...]]]) -> Principal | None:
    if not rows:
        return None
    # The columns selected, typed (mypy unpacks a Row as object).
    user_id, username, full_name, site_id, code, name, timezone, separator, _ = cast(
        "tuple[Any, ...]", rows[0])
    return Principal(user_id, username, full_name,
                     SiteRef(site_id, code, name, timezone, separator),
                     frozenset(row[8] for row in rows if row[8] is not None))


def unlock_user(session: Session, username: str) -> User:
    user = get_user(session, username, for_update=True)
    user.locked_at = None
    user.failed_logins = 0
    session.flush()
    return user


def deactivate_user(session: Session, username: str, *, by_user_id: int | None = None) -> User:
    """Deactivate a user; an administrator cannot lock themselves out this way."""
    user = get_user(session, username, for_update=True)
    if by_user_id is not None and user.id == by_user_id:
        raise Conflict("you cannot deactivate your own account; ask another administrator")
    user.active = False
    session.flush()
    return user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
