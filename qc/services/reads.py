"""The read side: release decisions, the QA release queue, the QC work list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

import identity.services as identity
from batches import services as batches
from gmp_mes.audit import format_time
from gmp_mes.models import Signature
from qc.models import DecisionKind, ReleaseDecision
from qc.services._common import (
    _decision,
)
from qc.services.overview import TestRow, qc_overview
from qc.services.release import release_problems
from qc.services.states import (
    QC_OPEN_STATUSES,
    QUEUE_STATUSES,
    ReleaseAction,
    awaits_final_release,
    may_reject,
)

if TYPE_CHECKING:
    from batches.models import Batch


def _time(value: datetime | None) -> str:
    return format_time(value) if value else "-"


def decisions_of(session: Session, batch_number: str) -> list[ReleaseDecision]:
    return list(session.scalars(
        select(ReleaseDecision).where(ReleaseDecision.batch_number == batch_number)
        .order_by(ReleaseDecision.id)
    ))


# QA's decisions on a batch that finish its manufacture one way or the other (a final
# release follows a conditional one, a failure after release waits for QA's rejection).
DECISIVE_KINDS = (DecisionKind.RELEASE.value, DecisionKind.CONDITIONAL_RELEASE.value,
                  DecisionKind.REJECT.value)


@dataclass(frozen=True)
class BatchVerdict:
    """A batch QA decided: when first (release, conditional release or rejection) and
    whether it is rejected now (a rejection after a conditional release counts)."""

    batch_number: str
    decided_at: datetime
    rejected: bool


def decided_batches(session: Session, start: datetime, end: datetime) -> list[BatchVerdict]:
    """The batches whose first decision falls in ``[start, end)``, oldest first, each
    rejected or not by every decision up to now (the manufacturing failure rate: rejected
    of decided, SPEC §13). Two reads, however many batches there are."""
    first: dict[str, datetime] = {}
    for number, at in session.execute(
            select(ReleaseDecision.batch_number, ReleaseDecision.decided_at)
            .where(ReleaseDecision.kind.in_(DECISIVE_KINDS), ReleaseDecision.decided_at < end)
            .order_by(ReleaseDecision.decided_at, ReleaseDecision.id)):
        first.setdefault(number, at)
    chosen = {n: at for n, at in first.items() if at >= start}
    rejected = set(session.scalars(
        select(ReleaseDecision.batch_number).where(
            ReleaseDecision.kind == DecisionKind.REJECT.value,
            ReleaseDecision.batch_number.in_(sorted(chosen))))) if chosen else set()
    return [BatchVerdict(n, at, n in rejected)
            for n, at in sorted(chosen.items(), key=lambda kv: (kv[1], kv[0]))]


@dataclass(frozen=True)
class DecisionOutcome:
    """A release decision with the batch and item statuses it left (``DecisionSchema``)."""

    decision: ReleaseDecision
    batch_status: str
    item_statuses: dict[str, str]

    @property
    def id(self) -> int:
        return self.decision.id

    @property
    def batch_number(self) -> str:
        return self.decision.batch_number

    @property
    def kind(self) -> str:
        return self.decision.kind

    @property
    def conditional(self) -> bool:
        return self.decision.kind == DecisionKind.CONDITIONAL_RELEASE

    @property
    def decided_at(self) -> datetime:
        return self.decision.decided_at

    @property
    def justification(self) -> str | None:
        return self.decision.justification

    @property
    def reason(self) -> str | None:
        return self.decision.reason

    @property
    def pending_tests(self) -> list[str]:
        return self.decision.pending_tests

    @property
    def items(self) -> list[str]:
        return self.decision.items

    @property
    def administered_items(self) -> list[str]:
        return self.decision.administered

    @property
    def alert_id(self) -> int | None:
        return self.decision.alert_id

    @property
    def signature(self) -> Signature | None:
        return self.decision.signature


def decision_outcome(session: Session, decision: ReleaseDecision) -> DecisionOutcome:
    """The decision as the API answers it: with the batch's and its bags' statuses now."""
    number = decision.batch_number
    return DecisionOutcome(
        decision, batches.get_batch(session, number).status,
        {item_id: identity.get_item(session, item_id).status
         for item_id in batches.final_product_item_ids(session, number)})


@dataclass(frozen=True)
class ReleaseState:
    """A batch's release state for the batch record: its status and every decision."""

    status: str
    conditional: bool
    decisions: list[ReleaseDecision]

    def entries(self) -> dict[str, str | bool | Signature]:
        """The record's labelled lines ("release signature", "blocked items", ...)."""
        state: dict[str, str | bool | Signature] = {"status": self.status,
                                                    "conditional": self.conditional}
        for decision in self.decisions:
            label = decision.kind
            if decision.signature is not None:
                state[f"{label} signature"] = decision.signature
            if decision.justification:
                state[f"{label} justification"] = decision.justification
            if decision.pending_tests:
                state[f"{label} pending tests"] = ", ".join(decision.pending_tests)
            if decision.reason:
                state[f"{label} reason"] = decision.reason
            if decision.kind == DecisionKind.FAILED_AFTER_RELEASE:
                state["blocked items"] = ", ".join(decision.items) or "none"
                state["administered before the failure"] = (
                    ", ".join(decision.administered) or "none")
        return state


def release_decision(session: Session, batch_number: str) -> ReleaseState | None:
    """The release state for the batch record (page, PDF and JSON export); None before
    QA has decided anything."""
    decisions = decisions_of(session, batch_number)
    if not decisions:
        return None
    batch = batches.get_batch(session, batch_number)
    return ReleaseState(batch.status, awaits_final_release(batch.status), decisions)


@dataclass(frozen=True)
class Problem:
    code: str
    message: str


@dataclass(frozen=True)
class QueueEntry:
    """A batch in QA's release queue with what is missing (``QueueEntrySchema``)."""

    batch: Batch
    problems: list[Problem]
    # Every pending result passed: QA's final release (SPEC §5) is due.
    final_release_due: bool
    conditional_release_possible: bool
    qc: list[TestRow]

    @property
    def batch_number(self) -> str:
        return self.batch.batch_number

    @property
    def coi_id(self) -> str:
        return self.batch.coi_id

    @property
    def status(self) -> str:
        return self.batch.status

    @property
    def process_code(self) -> str:
        return self.batch.process_code

    @property
    def process_version(self) -> int:
        return self.batch.process_version

    @property
    def conditional(self) -> bool:
        return awaits_final_release(self.batch.status)

    @property
    def releasable(self) -> bool:
        return not self.problems and not self.conditional

    @property
    def actions(self) -> tuple[ReleaseAction, ...]:
        """What QA may do with the batch now (the release page shows these forms)."""
        actions: list[ReleaseAction] = []
        if self.releasable:
            actions.append("release")
        if self.final_release_due:
            actions.append("final_release")
        if self.conditional_release_possible:
            actions.append("conditional")
        if may_reject(self.batch.status):
            actions.append("reject")
        return tuple(actions)


def release_queue(session: Session, *, limit: int | None = None,
                  offset: int = 0) -> list[QueueEntry]:
    """Batches awaiting QA (or on hold, or conditionally released and awaiting results or
    their final release), oldest first, each with what is missing for a release."""
    rows: list[QueueEntry] = []
    waiting = list(reversed(batches.list_batches(session, statuses=QUEUE_STATUSES)))
    # Only the page's batches get their (costly) overview.
    for batch in waiting[offset:None if limit is None else offset + limit]:
        overview = qc_overview(session, batch.batch_number)
        final_due = False
        problems: list[tuple[str, str]]
        if awaits_final_release(batch.status):
            problems = [("qc_pending", f"{r.test} pending (due {_time(r.due_at)})")
                        for r in overview if r.pending]
            problems += [("qc_failed", f"{r.test} failed") for r in overview if r.failed]
            if _decision(session, batch.batch_number,
                         DecisionKind.FAILED_AFTER_RELEASE) is not None and not any(
                             code == "qc_failed" for code, _ in problems):
                problems.append(("qc_failed", "a result failed after the conditional release"))
            final_due = not problems
            conditional_possible = False
        else:
            blockers = batches.release_blockers(session, batch.batch_number)
            problems = release_problems(session, batch.batch_number, overview=overview,
                                        blockers=blockers)
            conditional_possible = not release_problems(
                session, batch.batch_number, conditional=True, overview=overview,
                blockers=blockers,
            ) and any(r.pending and r.release_before_result for r in overview)
        rows.append(QueueEntry(
            batch=batch, problems=[Problem(c, m) for c, m in problems],
            final_release_due=final_due, conditional_release_possible=conditional_possible,
            qc=overview))
    return rows


def pending_qc(session: Session) -> list[tuple[Batch, list[TestRow]]]:
    """Batches with QC still open, and their open tests (the QC work list)."""
    out = []
    for batch in batches.list_batches(session, statuses=QC_OPEN_STATUSES):
        open_ = [r for r in qc_overview(session, batch.batch_number) if r.pending]
        if open_:
            out.append((batch, open_))
    return out
