"""Records of the batches domain: batches, step records, deviations.

EU GMP Chapter 4 (documentation) and Annex 11 §9: the step records are append-only in
the database itself; a correction is a new version of a step record that points to the
one it supersedes, so the original stays visible. Batches and deviations change
status but are never deleted.
"""

from __future__ import annotations

import enum
import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gmp_mes.audit import Audited
from gmp_mes.clock import utcnow
from gmp_mes.db import Base, UTCDateTime, check_in
from gmp_mes.models import Signature
from processes.models import ProcessVersion


class BatchStatus(enum.StrEnum):
    IN_PROCESS = "in_process"
    ON_HOLD = "on_hold"
    AWAITING_RELEASE = "awaiting_release"
    RELEASED = "released"
    CONDITIONALLY_RELEASED = "conditionally_released"
    REJECTED = "rejected"


FINAL_BATCH_STATUSES = frozenset({BatchStatus.RELEASED, BatchStatus.REJECTED})
# A starting material can feed only one batch in these states (enforced by a partial
# unique index): two concurrent batches from one patient's cells would be a mix-up risk.
ACTIVE_BATCH_STATUSES = (
    BatchStatus.IN_PROCESS, BatchStatus.ON_HOLD, BatchStatus.AWAITING_RELEASE,
)
_ACTIVE_SQL = "status IN ({})".format(", ".join(f"'{s.value}'" for s in ACTIVE_BATCH_STATUSES))


class DeviationKind(enum.StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class DeviationSeverity(enum.StrEnum):
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"


class DeviationStatus(enum.StrEnum):
    OPEN = "open"
    ASSESSED = "assessed"
    CLOSED = "closed"


class BatchCounter(Base):
    """Last batch number used per prefix and year (not a GMP record: a sequence)."""

    __tablename__ = "batch_counter"

    prefix: Mapped[str] = mapped_column(String(40), primary_key=True)
    last: Mapped[int] = mapped_column(Integer, default=0)


class Batch(Audited, Base):
    __tablename__ = "batch"
    __table_args__ = (
        CheckConstraint(check_in("status", BatchStatus), name="status"),
        Index(
            "uq_batch_active_starting_item", "starting_item_id", unique=True,
            sqlite_where=text(_ACTIVE_SQL), postgresql_where=text(_ACTIVE_SQL),
        ),
    )
    audit_entity = "batch"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_number: Mapped[str] = mapped_column(String(32), unique=True)
    coi_id: Mapped[str] = mapped_column(String(20), index=True)
    process_version_id: Mapped[int] = mapped_column(ForeignKey("process_version.id"))
    process_code: Mapped[str] = mapped_column(String(32))
    process_version: Mapped[int] = mapped_column(Integer)
    starting_item_id: Mapped[str] = mapped_column(ForeignKey("item.item_id"), index=True)
    site_code: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(24), default=BatchStatus.IN_PROCESS.value)
    status_reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    process: Mapped[ProcessVersion] = relationship(lazy="joined")

    def audit_key(self) -> str:
        return self.batch_number


class StepRecord(Audited, Base):
    """One execution of a process step. Append-only: a correction is a new version."""

    __tablename__ = "step_record"
    __table_args__ = (
        UniqueConstraint("batch_id", "step_code", "occurrence", "version",
                         name="uq_step_record_version"),
        Index("ix_step_record_batch", "batch_id", "step_index"),
        # Which records of a page were corrected (batches.services._not_superseded).
        Index("ix_step_record_supersedes", "supersedes_id"),
    )
    audit_entity = "step_record"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id"))
    batch_number: Mapped[str] = mapped_column(String(32))
    step_code: Mapped[str] = mapped_column(String(40))
    step_index: Mapped[int] = mapped_column(Integer)
    occurrence: Mapped[int] = mapped_column(Integer, default=1)  # day of a repeatable step
    version: Mapped[int] = mapped_column(Integer, default=1)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("step_record.id"))
    correction_reason: Mapped[str | None] = mapped_column(Text)
    values_json: Mapped[str] = mapped_column(Text)
    results_json: Mapped[str] = mapped_column(Text)  # per parameter: limits and pass/fail
    in_limits: Mapped[bool] = mapped_column(Boolean)
    created_items: Mapped[str | None] = mapped_column(Text)  # JSON list of item ids
    # JSON: the label scanned as the step's identity check (item, COI, custody event),
    # verified against the batch before the step was signed; part of what is signed.
    identity_scan: Mapped[str | None] = mapped_column(Text)
    # JSON list: the label of every bag scanned by a label-check step (``scans`` in the
    # definition), each checked like identity_scan; part of what is signed.
    label_scans: Mapped[str | None] = mapped_column(Text)
    # JSON object: what the step used, per need checked (``{"materials": [...lots...],
    # "equipment": [...]}``), as the ``registry.step_requirements`` providers answered it
    # before the step was signed; part of what is signed (SPEC §11).
    resources: Mapped[str | None] = mapped_column(Text)
    performed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    recorded_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))
    verifier_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))

    signature: Mapped[Signature] = relationship(foreign_keys=[signature_id], lazy="joined")
    verifier_signature: Mapped[Signature | None] = relationship(
        foreign_keys=[verifier_signature_id], lazy="joined"
    )

    @property
    def key(self) -> str:
        return record_key(self.batch_number, self.step_code, self.occurrence, self.version)

    @property
    def values(self) -> dict[str, Any]:
        return json.loads(self.values_json)

    @property
    def results(self) -> list[dict[str, Any]]:
        return json.loads(self.results_json)

    @property
    def scan(self) -> dict[str, Any] | None:
        return json.loads(self.identity_scan) if self.identity_scan else None

    @property
    def scans(self) -> list[dict[str, Any]] | None:
        return json.loads(self.label_scans) if self.label_scans else None

    @property
    def used(self) -> dict[str, Any] | None:
        """What the step used (lots, equipment), per need checked; None when nothing."""
        return json.loads(self.resources) if self.resources else None

    @property
    def item_ids(self) -> list[str]:
        return json.loads(self.created_items) if self.created_items else []

    def audit_key(self) -> str:
        return self.key


def record_key(batch_number: str, step_code: str, occurrence: int, version: int) -> str:
    return f"{batch_number}/{step_code}/{occurrence}/v{version}"


class Deviation(Audited, Base):
    __tablename__ = "deviation"
    __table_args__ = (
        CheckConstraint(check_in("kind", DeviationKind), name="kind"),
        CheckConstraint(check_in("severity", DeviationSeverity), name="severity"),
        CheckConstraint(check_in("status", DeviationStatus), name="status"),
        Index("ix_deviation_batch_status", "batch_id", "status"),
    )
    audit_entity = "deviation"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(48), unique=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id"))
    batch_number: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(10))
    severity: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10), default=DeviationStatus.OPEN.value)
    description: Mapped[str] = mapped_column(Text)
    step_record_id: Mapped[int | None] = mapped_column(ForeignKey("step_record.id"))
    step_code: Mapped[str | None] = mapped_column(String(40))
    parameter: Mapped[str | None] = mapped_column(String(40))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    opened_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    assessment: Mapped[str | None] = mapped_column(Text)
    assessed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assessed_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    assessment_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    closure: Mapped[str | None] = mapped_column(Text)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    closure_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))

    assessment_signature: Mapped[Signature | None] = relationship(
        foreign_keys=[assessment_signature_id], lazy="joined"
    )
    closure_signature: Mapped[Signature | None] = relationship(
        foreign_keys=[closure_signature_id], lazy="joined"
    )

    @property
    def blocks_release(self) -> bool:
        """SPEC §5.3: an open (not closed) major or critical deviation blocks release."""
        return self.status != DeviationStatus.CLOSED and self.severity != DeviationSeverity.MINOR

    @property
    def holds_batch(self) -> bool:
        """SPEC §2: on_hold while an unassessed major or critical deviation is open."""
        return self.status == DeviationStatus.OPEN and self.severity != DeviationSeverity.MINOR

    def audit_key(self) -> str:
        return self.number
