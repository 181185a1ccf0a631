"""Records of the processes domain: master batch record versions and QA's approvals.

EU GMP Chapter 4.3 (change control) and Annex 11 §9: a loaded process version never
changes and its approval is append-only, in the database itself. The tables were created
by the batches branch before processes had its package (issue 16); the processes branch
adopts them (``processes_0001``) and carries their changes from then on.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gmp_mes.audit import Audited
from gmp_mes.clock import utcnow
from gmp_mes.db import Base, UTCDateTime
from gmp_mes.models import Signature


class ProcessVersion(Audited, Base):
    """One loaded master batch record version; never changed once loaded."""

    __tablename__ = "process_version"
    __table_args__ = (UniqueConstraint("code", "version", name="uq_process_version_code"),)
    audit_entity = "process_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(64))
    definition: Mapped[str] = mapped_column(Text)  # canonical JSON of the validated file
    source: Mapped[str] = mapped_column(String(500))
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    approval: Mapped[ProcessApproval | None] = relationship(
        back_populates="process", lazy="selectin", uselist=False
    )

    @property
    def key(self) -> str:
        return f"{self.code}/v{self.version}"

    @property
    def approved(self) -> bool:
        return self.approval is not None

    def audit_key(self) -> str:
        return self.key


class ProcessApproval(Audited, Base):
    """QA's signed approval of a process version (one per version, append-only)."""

    __tablename__ = "process_approval"
    audit_entity = "process_approval"

    id: Mapped[int] = mapped_column(primary_key=True)
    process_version_id: Mapped[int] = mapped_column(
        ForeignKey("process_version.id"), unique=True
    )
    process_key: Mapped[str] = mapped_column(String(50))
    approved_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    approved_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))

    process: Mapped[ProcessVersion] = relationship(back_populates="approval")
    signature: Mapped[Signature] = relationship(lazy="joined")

    def audit_key(self) -> str:
        return self.process_key
