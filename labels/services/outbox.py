"""A networked label print as an outbox: the job recorded ``pending`` and committed,
the TCP send with no transaction open, then a second transaction records the copies
(``printed``) or the job ``failed``."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes import audit
from gmp_mes.accounts import Person
from gmp_mes.clock import utcnow
from gmp_mes.errors import DomainError, conflict, field_error
from labels import render
from labels.models import LabelPrint, LabelPrinter, LabelPrintJob, PrintJobStatus
from labels.services._common import subjects
from labels.services.printing import (
    PrintedLabel,
    PrintRequest,
    legacy_digest,
    prepare,
    printed,
    render_views,
    supersede,
    validate_request,
)
from labels.services.records import new_label_id
from labels.services.setup import PRINTER_TIMEOUT, printer_timeout


class PrinterDidNotTakeIt(OSError):
    """The printer did not confirm the job (no clean close within the timeout)."""


def send_zpl(host: str, port: int, data: bytes, *, timeout: float = PRINTER_TIMEOUT) -> None:
    """Hand ZPL to a printer over raw TCP (Zebra port 9100): connect, send everything,
    close our side and wait for the printer to close its side. The job counts as taken
    only after that clean close; OSError otherwise (refused, timed out, reset)."""
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.sendall(data)  # raises if the printer refuses or drops the job
        connection.shutdown(socket.SHUT_WR)
        try:
            while connection.recv(4096):
                continue
        except TimeoutError:
            raise PrinterDidNotTakeIt(
                f"the printer did not close the connection within {timeout:g} s after the "
                "job: it may not have printed it") from None


@dataclass
class PrintJob:
    """A printer job recorded ``pending`` (committed) and what to send, outside any
    transaction, by ``send_print_job``."""

    job_id: str
    printer: str
    host: str
    port: int
    labels: list[LabelPrint]
    views: list[render.LabelView]
    request: PrintRequest
    legacy_digest: str
    failure: str | None = None

    def render(self) -> bytes:
        return render_views(self.views, self.request)


def _printer_of(session: Session, user: Person, printer_name: str) -> LabelPrinter:
    site = user.site.code if user.site is not None else None
    printer = session.scalar(select(LabelPrinter).where(
        LabelPrinter.site_code == site, LabelPrinter.name == (printer_name or "").strip(),
        LabelPrinter.active.is_(True)))
    if printer is None:
        raise field_error("printer", f"no printer {printer_name!r} at site {site}")
    return printer


def queue_print_job(
    session: Session, item_id: str, printer_name: str, request: PrintRequest, *, user: Person
) -> PrintJob:
    """Transaction 1 of a networked print (the outbox): every print-control rule as for
    any print (the item row locked, serials allocated), then a ``pending`` job that
    reserves the serials. The caller commits before ``send_print_job``; no copy counts
    as printed until ``finish_print_job`` records the printer's answer."""
    printer = _printer_of(session, user, printer_name)
    request = validate_request(
        PrintRequest(**{**request.__dict__, "format": "zpl", "dpi": printer.dpi}))
    with audit.reason(session, request.reason):
        labels, views = prepare(session, item_id, request, user.id, record=False)
        job = LabelPrintJob(
            job_id="JOB-" + new_label_id()[4:],
            item_id=labels[0].item_id,
            printer=printer.name,
            address=f"{printer.host}:{printer.port}",
            status=PrintJobStatus.PENDING,
            first_serial=labels[0].serial,
            copies=len(labels),
            reprint=request.reprint,
            reason=request.reason,
            requested_by=user.id,
            requested_at=labels[0].printed_at,
        )
        session.add(job)
        session.flush()
    legacy = legacy_digest(subjects().subject(session, job.item_id))
    return PrintJob(job.job_id, printer.name, printer.host, printer.port, labels, views,
                    request, legacy)


def send_print_job(job: PrintJob, *, timeout: float | None = None) -> PrintJob:
    """Render and send the job: never inside a transaction (a hanging printer must not
    hold the write lock). Sets ``job.failure`` when the printer did not take it."""
    timeout = printer_timeout() if timeout is None else timeout
    try:
        send_zpl(job.host, job.port, job.render(), timeout=timeout)
    except OSError as exc:
        reason = str(exc) if isinstance(exc, PrinterDidNotTakeIt) else (
            exc.strerror or str(exc) or type(exc).__name__)
        job.failure = f"printer {job.printer} ({job.host}:{job.port}) did not take the " \
                      f"label ({reason})"
    return job


def finish_print_job(session: Session, job: PrintJob, *, user_id: int) -> PrintedLabel:
    """Transaction 2: the printer took the job -> its copies are recorded (audited) and
    the job ``printed``; otherwise the job ``failed`` with the reason, nothing counts
    as printed. The caller commits, then raises ``print_refusal(job)`` on a failure."""
    # Lock order as every print: the item row first, then the job's row.
    subjects().subject(session, job.labels[0].item_id, for_update=True)
    row = session.scalar(select(LabelPrintJob).where(LabelPrintJob.job_id == job.job_id)
                         .with_for_update())
    if row is None or row.status != PrintJobStatus.PENDING:
        # Swept as stale while the send ran (the process stalled): it stays failed.
        job.failure = job.failure or (
            f"job {job.job_id} was closed as failed before the printer answered; a label "
            "it printed is not on record and will not verify: destroy it")
        return printed(job.labels, job.views, job.request)
    now = utcnow()
    if job.failure is not None:
        with audit.reason(session, job.failure):
            row.status, row.failure, row.finished_at = PrintJobStatus.FAILED, job.failure, now
            session.flush()
        return printed(job.labels, job.views, job.request)
    with audit.reason(session, job.request.reason):
        for label in job.labels:
            label.printed_at = now
            session.add(label)
        first = job.labels[0]
        assert first.content_digest is not None  # every copy printed with serials has one
        supersede(session, first.item_id, first.content_digest, job.legacy_digest,
                   first.label_id, user_id)
        row.status, row.finished_at = PrintJobStatus.PRINTED, now
        session.flush()
    return printed(job.labels, job.views, job.request)


def print_refusal(job: PrintJob) -> DomainError:
    """409 ``printer_unreachable`` for a job the printer did not take (already recorded
    as failed)."""
    return conflict("printer_unreachable", f"{job.failure}; no print was recorded")
