"""Printer jobs left by a crash between the outbox's two transactions: failed by the
next print of the item and by the scheduler sweep; the item's jobs as the page lists them."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes import audit
from gmp_mes.clock import utcnow
from labels.models import LabelPrintJob, PrintJobStatus
from labels.services._common import canonical
from labels.services.setup import stale_after


def fail_stale_jobs(session: Session, item_id: str | None = None) -> list[str]:
    """Pending jobs older than ``stale_after()`` were left by a crash between the two
    transactions: mark them failed (audited); their serials stay unused. Every print of
    the item calls it first (``printing.prepare``)."""
    now = utcnow()
    query = select(LabelPrintJob).where(
        LabelPrintJob.status == PrintJobStatus.PENDING,
        LabelPrintJob.requested_at < now - stale_after())
    if item_id is not None:
        query = query.where(LabelPrintJob.item_id == item_id)
    failed = []
    for job in session.scalars(query.order_by(LabelPrintJob.id).with_for_update()):
        with audit.reason(session, "stale print job: no answer from the printer was recorded"):
            job.status, job.finished_at = PrintJobStatus.FAILED, now
            job.failure = ("no answer from the printer was recorded (the application "
                           "stopped during the send); a label it printed will not verify")
        failed.append(job.job_id)
    session.flush()
    return failed


def sweep_print_jobs(session: Session) -> list[str]:
    """Scheduler sweep: every stale pending job marked failed (audited)."""
    return fail_stale_jobs(session)


def sweep_job(app: Flask) -> list[str]:
    """Scheduler job (``gmp_mes.app.add_job``): stale printer jobs, in their own
    transaction."""
    with app.app_context(), app.extensions["gmp_mes.db"].transaction(
            actor=audit.Actor.system("labels")) as session:
        return [f"print job {j} failed (stale)" for j in sweep_print_jobs(session)]


def print_jobs_of_item(session: Session, item_id: str) -> list[LabelPrintJob]:
    """The item's printer jobs, newest first (pending and failed ones stay visible)."""
    return list(session.scalars(select(LabelPrintJob).where(
        LabelPrintJob.item_id == canonical(item_id)).order_by(LabelPrintJob.id.desc())))
