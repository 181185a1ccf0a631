"""Records of the qc domain: QC results, their reviews and invalidations, release decisions.

Every table here is append-only (database triggers, migration qc_0001): a result is
never edited (a correction is a new version that supersedes it, with a reason), a
review or an invalidation is a record of its own, and each release decision is a
new row (21 CFR 11.10(e), EU GMP Annex 11 §9: changes never obscure what was
recorded before).
"""

from __future__ import annotations

import enum
import json
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
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


class DecisionKind(enum.StrEnum):
    RELEASE = "release"
    CONDITIONAL_RELEASE = "conditional_release"
    # The final release of a conditionally released batch, once its pending results all
    # passed: signed by an independent QA user (SPEC §5), never given by the system.
    FINAL_RELEASE = "final_release"
    # A pending result of a conditionally released batch failed: items blocked, alert raised.
    FAILED_AFTER_RELEASE = "failed_after_release"
    REJECT = "reject"


class QcResult(Audited, Base):
    """One version of one QC test result. ``passed`` is computed, never entered."""

    __tablename__ = "qc_result"
    __table_args__ = (
        Index("ix_qc_result_batch_test", "batch_number", "test"),
        # One correction per version: two analysts correcting the same version at once
        # cannot both succeed.
        UniqueConstraint("supersedes_id", name="uq_qc_result_supersedes"),
        CheckConstraint("(value IS NULL) <> (outcome IS NULL)", name="value_or_outcome"),
    )
    audit_entity = "qc_result"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_number: Mapped[str] = mapped_column(ForeignKey("batch.batch_number"))
    coi_id: Mapped[str] = mapped_column(String(20))
    test: Mapped[str] = mapped_column(String(60))
    version: Mapped[int] = mapped_column(Integer, default=1)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("qc_result.id"))
    correction_reason: Mapped[str | None] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str | None] = mapped_column(String(60))
    unit: Mapped[str | None] = mapped_column(String(40))
    method: Mapped[str | None] = mapped_column(String(200))
    specification: Mapped[str] = mapped_column(String(200))
    passed: Mapped[bool] = mapped_column(Boolean)
    sample_item_id: Mapped[str | None] = mapped_column(ForeignKey("item.item_id"))
    recorded_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))

    signature: Mapped[Signature] = relationship(lazy="joined", foreign_keys=[signature_id])

    def audit_key(self) -> str:
        return f"{self.batch_number}:{self.test}:{self.id}"


class QcReview(Audited, Base):
    """Second-person review of a result version (signature meaning ``reviewed``)."""

    __tablename__ = "qc_review"
    audit_entity = "qc_review"

    id: Mapped[int] = mapped_column(primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("qc_result.id"), unique=True)
    reviewed_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))

    signature: Mapped[Signature] = relationship(lazy="joined")

    def audit_key(self) -> str:
        return str(self.result_id)


class QcInvalidation(Audited, Base):
    """A result declared invalid (assay failure) with a reason; the test is then retested."""

    __tablename__ = "qc_invalidation"
    audit_entity = "qc_invalidation"

    id: Mapped[int] = mapped_column(primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("qc_result.id"), unique=True)
    reason: Mapped[str] = mapped_column(Text)
    invalidated_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    invalidated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))

    signature: Mapped[Signature] = relationship(lazy="joined")

    def audit_key(self) -> str:
        return str(self.result_id)


class ReleaseDecision(Audited, Base):
    """One QA decision on a batch, or the system's follow-up of a conditional release."""

    __tablename__ = "release_decision"
    __table_args__ = (
        CheckConstraint(check_in("kind", DecisionKind), name="kind"),
        # Backstop of the batch lock: a batch is released, finalised, rejected... once.
        UniqueConstraint("batch_number", "kind", name="uq_release_decision_batch_kind"),
    )
    audit_entity = "release_decision"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_number: Mapped[str] = mapped_column(ForeignKey("batch.batch_number"), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    justification: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    # JSON lists: tests pending at a conditional release; items moved by the decision;
    # items already administered when a pending result failed.
    pending_tests_json: Mapped[str] = mapped_column(Text, default="[]")
    items_json: Mapped[str] = mapped_column(Text, default="[]")
    administered_json: Mapped[str] = mapped_column(Text, default="[]")
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alert.id"))

    signature: Mapped[Signature | None] = relationship(lazy="joined")

    @property
    def pending_tests(self) -> list[str]:
        return json.loads(self.pending_tests_json)

    @property
    def items(self) -> list[str]:
        return json.loads(self.items_json)

    @property
    def administered(self) -> list[str]:
        return json.loads(self.administered_json)

    def audit_key(self) -> str:
        return f"{self.batch_number}:{self.kind}"
