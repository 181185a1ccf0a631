"""Records of the outcomes domain: the follow-up schedule and the signed follow-up records.

Both tables are append-only (database triggers, migration outcomes_0001): a visit's due
time is fixed at the administration, and a follow-up record is never edited: a
correction is a new version that supersedes it, with a reason (21 CFR 11.10(e), EU GMP
Annex 11 §9: changes never obscure what was recorded before).
"""

from __future__ import annotations

import enum
import json
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gmp_mes.audit import Audited
from gmp_mes.clock import utcnow
from gmp_mes.db import Base, UTCDateTime, check_in
from gmp_mes.models import Signature


class Response(enum.StrEnum):
    """Response to treatment at a visit (SPEC §16): complete, partial, stable disease,
    progressive disease, not evaluable."""

    CR = "CR"
    PR = "PR"
    SD = "SD"
    PD = "PD"
    NE = "NE"


class VisitState(enum.StrEnum):
    DUE = "due"  # not recorded yet, within its window (or still ahead)
    DONE = "done"  # a follow-up record exists
    OVERDUE = "overdue"  # not recorded, its window has passed
    # gmp-mes extension: the patient died before the visit was due; nothing more is due.
    ENDED = "ended"


class FollowUpVisit(Audited, Base):
    """One scheduled visit of the follow-up of a batch's administration."""

    __tablename__ = "follow_up_visit"
    __table_args__ = (
        # One schedule per batch: the first bag infused starts it, later bags do not.
        UniqueConstraint("batch_number", "visit", name="uq_follow_up_visit_batch_visit"),
        Index("ix_follow_up_visit_coi_id", "coi_id"),
        Index("ix_follow_up_visit_overdue_at", "overdue_at"),
        CheckConstraint("overdue_at > due_at", name="window"),
    )
    audit_entity = "follow_up_visit"

    id: Mapped[int] = mapped_column(primary_key=True)
    coi_id: Mapped[str] = mapped_column(ForeignKey("patient.coi_id"))
    batch_number: Mapped[str] = mapped_column(ForeignKey("batch.batch_number"))
    item_id: Mapped[str] = mapped_column(ForeignKey("item.item_id"))  # the bag infused
    visit: Mapped[str] = mapped_column(String(16))  # "P28D", "P2Y"
    seq: Mapped[int] = mapped_column(Integer)
    administered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    overdue_at: Mapped[datetime] = mapped_column(UTCDateTime)
    site_code: Mapped[str] = mapped_column(String(32))  # where the patient was infused
    process_code: Mapped[str] = mapped_column(String(32))
    process_version: Mapped[int] = mapped_column(Integer)
    scheduled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def audit_key(self) -> str:
        return f"{self.batch_number}:{self.visit}"


class FollowUpRecord(Audited, Base):
    """One version of the record of one visit, signed by the clinician. The CRS and
    ICANS grades are computed from the elements (``outcomes.grading``), never typed."""

    __tablename__ = "follow_up_record"
    __table_args__ = (
        UniqueConstraint("visit_id", "version", name="uq_follow_up_record_visit_version"),
        # One correction per version: two clinicians correcting at once cannot both win.
        UniqueConstraint("supersedes_id", name="uq_follow_up_record_supersedes"),
        Index("ix_follow_up_record_coi_id", "coi_id"),
        CheckConstraint(check_in("response", Response), name="response"),
        CheckConstraint("crs_grade IS NULL OR (crs_grade >= 0 AND crs_grade <= 4)",
                        name="crs_grade"),
        CheckConstraint("icans_grade IS NULL OR (icans_grade >= 0 AND icans_grade <= 4)",
                        name="icans_grade"),
        CheckConstraint("(crs IS NULL) = (crs_grade IS NULL)", name="crs_graded"),
        CheckConstraint("(icans IS NULL) = (icans_grade IS NULL)", name="icans_graded"),
        CheckConstraint("(death_date IS NULL) = alive", name="death_date"),
        CheckConstraint("(version = 1) = (supersedes_id IS NULL)", name="version_chain"),
    )
    audit_entity = "follow_up_record"

    id: Mapped[int] = mapped_column(primary_key=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("follow_up_visit.id"))
    coi_id: Mapped[str] = mapped_column(String(14))
    batch_number: Mapped[str] = mapped_column(String(32))
    visit: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer, default=1)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("follow_up_record.id"))
    correction_reason: Mapped[str | None] = mapped_column(Text)
    assessed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    response: Mapped[str] = mapped_column(String(2))
    crs: Mapped[str | None] = mapped_column(Text)  # the elements as JSON
    icans: Mapped[str | None] = mapped_column(Text)
    crs_grade: Mapped[int | None] = mapped_column(Integer)
    icans_grade: Mapped[int | None] = mapped_column(Integer)
    alive: Mapped[bool] = mapped_column(Boolean)
    death_date: Mapped[date | None] = mapped_column(Date)
    recorded_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))

    signature: Mapped[Signature] = relationship(lazy="joined", foreign_keys=[signature_id])

    def audit_key(self) -> str:
        return f"{self.batch_number}:{self.visit}:{self.version}"

    @property
    def crs_elements(self) -> dict[str, Any] | None:
        return None if self.crs is None else json.loads(self.crs)

    @property
    def icans_elements(self) -> dict[str, Any] | None:
        return None if self.icans is None else json.loads(self.icans)


class AgreementStatement(Audited, Base):
    """A signed statement of one patient's milestones under an outcome agreement, as sent
    to a payer. ``content`` is the canonical JSON signed (the signature's digest binds it);
    a later statement is a new row, never an edit."""

    __tablename__ = "agreement_statement"
    __table_args__ = (Index("ix_agreement_statement_coi_id", "coi_id"),)
    audit_entity = "agreement_statement"

    id: Mapped[int] = mapped_column(primary_key=True)
    agreement_code: Mapped[str] = mapped_column(String(40))
    agreement_version: Mapped[int] = mapped_column(Integer)
    coi_id: Mapped[str] = mapped_column(ForeignKey("patient.coi_id"))
    batch_number: Mapped[str | None] = mapped_column(String(32))
    content: Mapped[str] = mapped_column(Text)
    content_digest: Mapped[str] = mapped_column(String(64))
    issued_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))

    signature: Mapped[Signature] = relationship(lazy="joined", foreign_keys=[signature_id])

    def audit_key(self) -> str:
        return f"{self.agreement_code}:{self.coi_id}:{self.id}"

    @property
    def document(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.content)
        return loaded
