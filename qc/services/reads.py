"""The read side: release decisions, the QA release queue, the QC work list."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from batches import services as batches
from gmp_mes.audit import format_time
from qc.models import DecisionKind, ReleaseDecision
from qc.services._common import (
    QC_OPEN_STATUSES,
    _decision,
    _signature,
)
from qc.services.overview import qc_overview
from qc.services.release import release_problems


def decisions_of(session: Session, batch_number: str) -> list[ReleaseDecision]:
    return list(session.scalars(
        select(ReleaseDecision).where(ReleaseDecision.batch_number == batch_number)
        .order_by(ReleaseDecision.id)
    ))


def decision_dict(decision: ReleaseDecision) -> dict[str, Any]:
    return {
        "id": decision.id,
        "batch_number": decision.batch_number,
        "kind": decision.kind,
        "conditional": decision.kind == DecisionKind.CONDITIONAL_RELEASE,
        "decided_at": format_time(decision.decided_at),
        "justification": decision.justification,
        "reason": decision.reason,
        "pending_tests": decision.pending_tests,
        "items": decision.items,
        "administered_items": decision.administered,
        "alert_id": decision.alert_id,
        "signature": _signature(decision.signature),
    }


def release_decision(session: Session, batch_number: str) -> dict[str, Any] | None:
    """The release state for the batch record (page, API, PDF export)."""
    decisions = decisions_of(session, batch_number)
    if not decisions:
        return None
    batch = batches.get_batch(session, batch_number)
    state: dict[str, Any] = {"status": batch.status,
                             "conditional": batch.status == "conditionally_released"}
    for decision in decisions:
        label = decision.kind
        if decision.signature is not None:
            state[f"{label} signature"] = _signature(decision.signature)
        if decision.justification:
            state[f"{label} justification"] = decision.justification
        if decision.pending_tests:
            state[f"{label} pending tests"] = ", ".join(decision.pending_tests)
        if decision.reason:
            state[f"{label} reason"] = decision.reason
        if decision.kind == DecisionKind.FAILED_AFTER_RELEASE:
            state["blocked items"] = ", ".join(decision.items) or "none"
            state["administered before the failure"] = ", ".join(decision.administered) or "none"
    return state


QUEUE_STATUSES = ("awaiting_release", "on_hold", "conditionally_released")


def release_queue(session: Session, *, limit: int | None = None,
                  offset: int = 0) -> list[dict[str, Any]]:
    """Batches awaiting QA (or on hold, or conditionally released and awaiting results or
    their final release), oldest first, each with what is missing for a release."""
    rows = []
    waiting = list(reversed(batches.list_batches(session, statuses=QUEUE_STATUSES)))
    # Only the page's batches get their (costly) overview.
    for batch in waiting[offset:None if limit is None else offset + limit]:
        overview = qc_overview(session, batch.batch_number)
        final_due = False
        if batch.status == "conditionally_released":
            problems = [("qc_pending", f"{r['test']} pending (due {r['due_at'] or '-'})")
                        for r in overview if r["pending"]]
            problems += [("qc_failed", f"{r['test']} failed") for r in overview if r["failed"]]
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
            ) and any(r["pending"] and r["release_before_result"] for r in overview)
        rows.append({
            "batch_number": batch.batch_number,
            "coi_id": batch.coi_id,
            "status": batch.status,
            "process_code": batch.process_code,
            "process_version": batch.process_version,
            "conditional": batch.status == "conditionally_released",
            "releasable": not problems and batch.status != "conditionally_released",
            # Every pending result passed: QA's final release (SPEC §5) is due.
            "final_release_due": final_due,
            "conditional_release_possible": conditional_possible,
            "problems": [{"code": c, "message": m} for c, m in problems],
            "qc": overview,
        })
    return rows


def pending_qc(session: Session) -> list[tuple[Any, list[dict[str, Any]]]]:
    """Batches with QC still open, and their open tests (the QC work list)."""
    out = []
    for batch in batches.list_batches(session, statuses=QC_OPEN_STATUSES):
        open_ = [r for r in qc_overview(session, batch.batch_number) if r["pending"]]
        if open_:
            out.append((batch, open_))
    return out
