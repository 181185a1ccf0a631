"""Core records: sites, users and roles, API tokens, e-signatures, audit events."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Computed,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gmp_mes.audit import Audited
from gmp_mes.clock import utcnow
from gmp_mes.db import Base, UTCDateTime, check_in


class Role(enum.StrEnum):
    OPERATOR = "operator"
    QC = "qc"
    QA = "qa"
    CLINICIAN = "clinician"
    ADMIN = "admin"


class SiteKind(enum.StrEnum):
    COLLECTION = "collection"
    MANUFACTURING = "manufacturing"
    TREATMENT = "treatment"


class DecimalSeparator(enum.StrEnum):
    """How a site's people write decimals in page forms (issue 15); the point is always
    accepted too (ISO 80000)."""

    POINT = "."
    COMMA = ","


class Meaning(enum.StrEnum):
    """Meanings of an electronic signature (21 CFR 11.50(a)(3))."""

    PERFORMED = "performed"
    VERIFIED = "verified"
    REVIEWED = "reviewed"
    APPROVED = "approved"
    RELEASED = "released"
    REJECTED = "rejected"
    ADMINISTERED = "administered"


class Site(Audited, Base):
    __tablename__ = "site"
    __table_args__ = (
        CheckConstraint(check_in("kind", SiteKind), name="kind"),
        CheckConstraint(check_in("decimal_separator", DecimalSeparator),
                        name="decimal_separator"),
    )
    audit_entity = "site"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    decimal_separator: Mapped[str] = mapped_column(String(1), default=".", server_default=".")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def audit_key(self) -> str:
        return self.code


class User(Audited, Base):
    """A person. Never deleted and never renamed: deactivated instead (21 CFR 11.100(a))."""

    __tablename__ = "app_user"
    audit_entity = "user"
    audit_redacted = frozenset({"password_hash"})

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    # Where alerts for the user's roles and site are e-mailed (optional).
    email: Mapped[str | None] = mapped_column(String(254))
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # 21 CFR 11.300(b): a password an administrator set is one-time; it must be changed
    # before it gives a token or a session. Expiry counts from password_changed_at.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    site: Mapped[Site] = relationship(lazy="joined")
    role_rows: Mapped[list[UserRole]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", back_populates="user"
    )

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(row.role for row in self.role_rows)

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    def audit_key(self) -> str:
        return self.username


class UserRole(Audited, Base):
    __tablename__ = "user_role"
    __table_args__ = (CheckConstraint(check_in("role", Role), name="role"),)
    audit_entity = "user_role"
    audit_deletable = True  # revoking a role is a change, recorded as a "delete" event

    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), primary_key=True)
    user: Mapped[User] = relationship(back_populates="role_rows")

    def audit_key(self) -> str:
        return f"{self.user_id}:{self.role}"


class CredentialKind(enum.StrEnum):
    TOKEN = "token"  # an API bearer token
    SESSION = "session"  # a page login; the cookie carries the secret, the server its digest


class ApiToken(Base):
    """Bearer tokens and page sessions, stored only as a SHA-256 digest.

    Annex 11 §12: revocable on the server: logout, ``DELETE /auth/tokens/current``, an
    administrator, deactivation, lockout and a password change set ``revoked_at``.
    """

    __tablename__ = "api_token"
    __table_args__ = (CheckConstraint(check_in("kind", CredentialKind), name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(10), default=CredentialKind.TOKEN.value)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoke_reason: Mapped[str | None] = mapped_column(String(200))

    user: Mapped[User] = relationship(lazy="joined")

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.expires_at > utcnow()


class RateLimitCounter(Base):
    """Fixed-window counters of the ``limits`` storage over the application's database
    (gmp_mes.ratelimit): shared by every worker and node without another server."""

    __tablename__ = "rate_limit"

    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float)  # POSIX seconds (what `limits` uses)


class Signature(Audited, Base):
    """An executed electronic signature, bound to the digest of what it signs.

    21 CFR 11.50: printed name, date/time and meaning; 11.70: the digest of the
    signed record's content links the signature to that exact content.
    """

    __tablename__ = "signature"
    __table_args__ = (
        CheckConstraint(check_in("meaning", Meaning), name="meaning"),
        Index("ix_signature_entity", "entity_type", "entity_id"),
    )
    audit_entity = "signature"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    username: Mapped[str] = mapped_column(String(64))
    printed_name: Mapped[str] = mapped_column(String(200))
    meaning: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    entity_type: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str] = mapped_column(String(80))
    content_digest: Mapped[str] = mapped_column(String(64))

    def manifestation(self) -> str:
        """The human-readable form required on displays and printouts (11.50(b))."""
        stamp = self.signed_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{self.printed_name} ({self.username}), {stamp}, {self.meaning}"


class AuditEvent(Base):
    """One entry of the hash-chained, append-only audit trail.

    ``record`` is the canonical JSON of the whole event and the only thing the
    hash covers; the other columns are generated from it by the database (see
    migration core_0001), so a search can never disagree with the record.
    """

    __tablename__ = "audit_event"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    record: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    occurred_at: Mapped[str] = mapped_column(String(32), Computed("record ->> 'at'"))
    user_id: Mapped[int | None] = mapped_column(Integer, Computed("record ->> 'user_id'"))
    username: Mapped[str] = mapped_column(String(64), Computed("record ->> 'username'"))
    action: Mapped[str] = mapped_column(String(60), Computed("record ->> 'action'"))
    entity_type: Mapped[str] = mapped_column(String(40), Computed("record ->> 'entity_type'"))
    entity_id: Mapped[str] = mapped_column(String(80), Computed("record ->> 'entity_id'"))
    reason: Mapped[str | None] = mapped_column(Text, Computed("record ->> 'reason'"))


class IdempotencyKey(Base):
    """The first answer to an API POST sent with an ``Idempotency-Key`` (SPEC §7).

    Written in the same transaction as the request's own changes, so it exists exactly
    when they were committed; ``status`` is NULL while that transaction is in progress.
    ``fingerprint`` is an HMAC (keyed with the application secret) of the method, path
    and body, so a repeat can be told from a different request reusing the key without
    keeping the body (it may hold a signature password). Not a GMP record: a technical
    memo of an answer, whose writes are audited on their own.
    """

    __tablename__ = "idempotency_key"
    __table_args__ = (
        Index("uq_idempotency_key_user_id_key", "user_id", "key", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    key: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(100))
    body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
