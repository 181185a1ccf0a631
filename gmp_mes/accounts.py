"""Users, sites, login, lockout and API tokens (the core's account services).

21 CFR 11.100(a): an electronic signature is unique to one person and never
reassigned, so user names are never deleted or reused: users are deactivated.
21 CFR 11.300(d): failed attempts are recorded and lock the account.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, TypeAlias
from zoneinfo import available_timezones

from sqlalchemy import Connection, Row, bindparam, select
from sqlalchemy.orm import Session

from gmp_mes import audit
from gmp_mes.clock import utcnow
from gmp_mes.errors import (
    AccountInactive,
    AccountLocked,
    AlreadyExists,
    Conflict,
    FollowUp,
    InvalidCredentials,
    NotFound,
    ValidationFailed,
)
from gmp_mes.models import ApiToken, Role, Site, SiteKind, User, UserRole
from gmp_mes.passwords import check_password, hash_password, password_problems

MAX_FAILED_LOGINS = 5
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
EMAIL = re.compile(r"^[^@\s<>,;\"]{1,64}@[A-Za-z0-9.-]{1,189}\.[A-Za-z]{2,63}$")


def create_site(
    session: Session, code: str, *, kind: str, name: str, timezone: str = "UTC"
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
    if errors:
        raise ValidationFailed("invalid site", errors=errors)
    if session.scalar(select(Site).where(Site.code == code)):
        raise AlreadyExists(f"site {code} already exists")
    site = Site(code=code, kind=kind, name=name.strip(), timezone=timezone)
    session.add(site)
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
) -> User:
    username = username.strip().lower()
    email = _clean_email(email)
    roles = sorted(set(roles))
    errors: dict[str, list[str]] = {}
    if not USERNAME.match(username):
        errors["username"] = ["must be 1-64 letters, digits, dots, dashes or underscores"]
    unknown = [r for r in roles if r not in {x.value for x in Role}]
    if not roles or unknown:
        errors["roles"] = [f"each role must be one of {', '.join(r.value for r in Role)}"]
    if problems := password_problems(password):
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


def record_failure(username: str, max_failed: int = MAX_FAILED_LOGINS) -> FollowUp:
    """A follow-up that counts a failed password, run after the failed request rolled back."""

    def follow_up(session: Session) -> None:
        user = session.scalar(
            select(User).where(User.username == username).with_for_update(of=User)
        )
        if user is None:
            audit.record(session, "auth.failed", "user", username, new={"known": False})
            return
        session.info["actor"] = audit.Actor(user.username, user.id, user.full_name)
        user.failed_logins += 1
        if user.failed_logins >= max_failed and user.locked_at is None:
            user.locked_at = utcnow()
        session.flush()
        audit.record(
            session, "auth.failed", "user", user.username, new={"failed": user.failed_logins}
        )

    return follow_up


def authenticate(
    session: Session, username: str, password: str, *, max_failed: int = MAX_FAILED_LOGINS
) -> User:
    """Check a password; failures count toward lockout even though the request fails."""
    name = (username or "").strip().lower()
    user = session.scalar(select(User).where(User.username == name))
    valid = check_password(user.password_hash if user else None, password or "")
    if user is not None and user.locked_at is not None:
        raise AccountLocked(f"account {name} is locked; an administrator must unlock it")
    if user is None or not valid:
        raise InvalidCredentials(
            "wrong user name or password", follow_up=record_failure(name, max_failed)
        )
    if not user.active:
        raise AccountInactive(f"account {name} is deactivated")
    if user.failed_logins:
        user.failed_logins = 0
    return user


def issue_token(session: Session, user: User, ttl: timedelta) -> tuple[str, datetime]:
    token = secrets.token_urlsafe(32)
    expires_at = utcnow() + ttl
    session.add(ApiToken(user_id=user.id, token_digest=_digest(token), expires_at=expires_at))
    session.flush()
    return token, expires_at


@dataclass(frozen=True, slots=True)
class SiteRef:
    """The caller's home site, as the request saw it."""

    id: int
    code: str
    name: str
    timezone: str


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
           _site.c.name, _site.c.timezone, _role.c.role)
    .select_from(_user.join(_site, _site.c.id == _user.c.site_id)
                 .outerjoin(_role, _role.c.user_id == _user.c.id))
    .where(_user.c.active.is_(True), _user.c.locked_at.is_(None))
)
_BY_TOKEN = _PRINCIPAL.join_from(_user, _token, _token.c.user_id == _user.c.id).where(
    _token.c.token_digest == bindparam("digest"), _token.c.expires_at > bindparam("now")
)
_BY_ID = _PRINCIPAL.where(_user.c.id == bindparam("user_id"))


def principal_for_token(connection: Connection, token: str) -> Principal | None:
    """The active, unlocked user a valid, unexpired token belongs to (one query)."""
    rows = connection.execute(_BY_TOKEN, {"digest": _digest(token), "now": utcnow()}).all()
    return _principal(rows)


def principal_by_id(connection: Connection, user_id: int) -> Principal | None:
    """The user with this id, when active and unlocked (a logged-in browser session)."""
    return _principal(connection.execute(_BY_ID, {"user_id": user_id}).all())


def _principal(rows: Sequence[Row[Any]]) -> Principal | None:
    if not rows:
        return None
    user_id, username, full_name, site_id, code, name, timezone, _ = rows[0]
    return Principal(user_id, username, full_name, SiteRef(site_id, code, name, timezone),
                     frozenset(row[7] for row in rows if row[7] is not None))


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
