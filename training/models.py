"""Records of the training domain (SPEC §12; EU GMP Part IV 3, 21 CFR 211.25).

- ``qualification``: one training record: a person holds a qualification ``code`` from
  ``granted_at`` (the system's time) until ``valid_until``, granted by QA or an
  administrator with an e-signature (meaning ``approved``). Append-only: a renewal is a
  new record, never an edit of the old one (EU GMP Annex 11 §9).
- ``qualification_revocation``: the withdrawal of one record, with who, when and why.
  Append-only, at most one per record (unique). A record is valid at ``t`` when
  ``granted_at <= t < valid_until`` and it was not revoked at or before ``t``.

The status (valid, expired, revoked) is computed, never stored (``training.services``).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gmp_mes.audit import Audited
from gmp_mes.clock import utcnow
from gmp_mes.db import Base, UTCDateTime
from gmp_mes.models import Signature, User


class RecordStatus(enum.StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"


class Qualification(Audited, Base):
    """One training record (never edited; a renewal is another row)."""

    __tablename__ = "qualification"
    __table_args__ = (
        CheckConstraint("valid_until > granted_at", name="valid_after_granted"),
        # Segregation of duties (EU GMP Part IV 3): nobody qualifies themselves.
        CheckConstraint("granted_by <> user_id", name="not_self_granted"),
        # The records of one person and code in order (step check, revocation, history).
        Index("ix_qualification_user_code", "user_id", "code", "id"),
        # The sweep and the dashboard read what runs out soon.
        Index("ix_qualification_valid_until", "valid_until"),
    )
    audit_entity = "qualification"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    code: Mapped[str] = mapped_column(String(48))  # processes QUALIFICATION_CODE
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime)
    granted_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))

    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="joined")
    granter: Mapped[User] = relationship(foreign_keys=[granted_by], lazy="joined")
    signature: Mapped[Signature] = relationship(lazy="joined")
    revocation: Mapped[QualificationRevocation | None] = relationship(
        lazy="joined", uselist=False, viewonly=True)

    def audit_key(self) -> str:
        # No relationship read: the audit hook and `audit verify` call it on bare rows.
        return f"{self.code}:{self.id}"

    @property
    def revoked_at(self) -> datetime | None:
        return self.revocation.revoked_at if self.revocation is not None else None

    def valid_at(self, at: datetime) -> bool:
        """Held at ``at``: granted, not yet expired, not revoked at or before ``at``."""
        revoked_at = self.revoked_at
        return (self.granted_at <= at < self.valid_until
                and (revoked_at is None or revoked_at > at))

    def status_at(self, at: datetime) -> RecordStatus:
        if self.revoked_at is not None and self.revoked_at <= at:
            return RecordStatus.REVOKED
        if at >= self.valid_until:
            return RecordStatus.EXPIRED
        return RecordStatus.VALID


class QualificationRevocation(Audited, Base):
    """The withdrawal of one training record (with its reason)."""

    __tablename__ = "qualification_revocation"
    audit_entity = "qualification_revocation"

    id: Mapped[int] = mapped_column(primary_key=True)
    qualification_id: Mapped[int] = mapped_column(ForeignKey("qualification.id"), unique=True)
    reason: Mapped[str] = mapped_column(Text)
    revoked_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    revoker: Mapped[User] = relationship(lazy="joined")

    def audit_key(self) -> str:
        return str(self.qualification_id)
