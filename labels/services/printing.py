"""Print control (SPEC §4): one ``label_print`` row per printed copy, each with its
serial; original and reprints; labels of changed content supersede the earlier ones;
sheets and marked previews."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from gmp_mes import audit
from gmp_mes.clock import utcnow
from gmp_mes.errors import conflict, field_error
from gmp_mes.registry import LabelSubject
from labels import keys, render
from labels.models import (
    AssetLabelPrint,
    LabelFormat,
    LabelPrint,
    LabelPrintJob,
    LabelVoid,
    PrintJobStatus,
)
from labels.payload import format_expiry, sign, signed_content
from labels.services import signing
from labels.services._common import subjects
from labels.services.jobs import fail_stale_jobs
from labels.services.records import new_label_id
from labels.services.setup import stock_for

MAX_COPIES = 100
MAX_SHEET_ITEMS = 100
MEDIA_TYPES = {
    "png": "image/png",
    "svg": "image/svg+xml",
    "pdf": "application/pdf",
    "zpl": "application/zpl",
}


@dataclass(frozen=True)
class PrintRequest:
    format: str
    workstation: str | None = None
    copies: int = 1
    reprint: bool = False
    reason: str | None = None
    dpi: int = 203  # ZPL printer resolution: 203 or 300
    paper: str = "a4"  # PDF sheets


@dataclass(frozen=True)
class PrintedLabel:
    """A recorded print. ``content`` is rendered on first use: the boundary commits the
    print record first (``gmp_mes.http.commit_unit_of_work``), so the slow rendering of a
    sheet holds neither the SQLite writer lock nor PostgreSQL row locks (issue 13).
    ``labels``: the recorded copies (``LabelPrint`` of an item, ``AssetLabelPrint`` of a
    lot or equipment; empty for a preview)."""

    labels: Sequence[LabelPrint | AssetLabelPrint]
    render: Callable[[], bytes]
    media_type: str
    filename: str
    payloads: list[str]

    @cached_property
    def content(self) -> bytes:
        return self.render()


def validate_request(request: PrintRequest) -> PrintRequest:
    if request.format not in {f.value for f in LabelFormat}:
        raise field_error("format", "must be one of png, svg, pdf, zpl")
    if not 1 <= request.copies <= MAX_COPIES:
        raise field_error("copies", f"must be between 1 and {MAX_COPIES}")
    if request.dpi not in (203, 300):
        raise field_error("dpi", "ZPL printers here are 203 or 300 dpi")
    if request.paper not in ("a4", "letter"):
        raise field_error("paper", "must be a4 or letter")
    reason = (request.reason or "").strip() or None
    # Print control: a reprint is never silent, its reason is part of the record.
    if request.reprint and reason is None:
        raise field_error("reason", "a reprint needs a reason")
    workstation = (request.workstation or "").strip() or None
    if workstation is not None and len(workstation) > 100:
        raise field_error("workstation", "at most 100 characters")
    return PrintRequest(
        request.format,
        workstation,
        request.copies,
        request.reprint,
        reason if request.reprint else None,
        request.dpi,
        request.paper,
    )


def _content_digest(content: str) -> str:
    return hashlib.sha256(content.encode("ascii")).hexdigest()


def _next_serial(session: Session, item_id: str) -> int:
    """The next copy number of the item (the item row is locked by the caller; the
    unique index on (item_id, serial) backs it up)."""
    last = session.execute(
        select(func.max(LabelPrint.serial)).where(LabelPrint.item_id == item_id)
    ).scalar()
    # Serials reserved by printer jobs (pending, printed or failed) are never given
    # again: a failed job's label may exist on paper, it must stay an unknown copy.
    reserved = session.execute(
        select(func.max(LabelPrintJob.first_serial + LabelPrintJob.copies - 1))
        .where(LabelPrintJob.item_id == item_id)
    ).scalar()
    return max(last or 0, reserved or 0) + 1


def prepare(
    session: Session,
    item_id: str,
    request: PrintRequest,
    user_id: int,
    *,
    replaces: str | None = None,
    record: bool = True,
) -> tuple[list[LabelPrint], list[render.LabelView]]:
    """Check the rules for one item, record one row per printed copy (each with its
    own serial), return the records and their views. With ``record=False`` (a printer
    job) the rows are built but not added: they are recorded when the printer took them."""
    # Lock the item: two workstations printing the "first" label at once must not
    # both produce originals, nor two copies get one serial.
    subject = subjects().subject(session, item_id, for_update=True)
    item_id = subject.item_id  # canonical id
    fail_stale_jobs(session, item_id)
    pending = session.scalar(select(LabelPrintJob).where(
        LabelPrintJob.item_id == item_id,
        LabelPrintJob.status == PrintJobStatus.PENDING).limit(1))
    if pending is not None:
        # One print of an item in flight at a time: whether it becomes the original is
        # known only when the printer answers.
        raise conflict(
            "already_printed" if not request.reprint and not pending.reprint
            else "print_in_progress",
            f"{item_id} is being printed on printer {pending.printer} (job {pending.job_id}); "
            "wait for it to finish, then print again as a reprint with a reason if needed",
        )
    ring = signing.keyring()
    fields = _signed_fields(subject)
    content_digest = _content_digest(signed_content(*fields))
    earlier = session.execute(
        select(LabelPrint.label_id).where(LabelPrint.item_id == item_id).limit(1)
    ).scalar()
    if earlier is not None and not request.reprint:
        raise conflict(
            "already_printed",
            f"{item_id} already has a label ({earlier}); print again as a reprint with a reason",
        )
    if earlier is None and request.reprint:
        raise conflict("not_printed", f"{item_id} has no label yet: print the original first")
    now = utcnow()
    stock = stock_for(session, subject.site_code, subject.kind)
    _check_fit(subject, stock, now)
    first_serial = _next_serial(session, item_id)
    key_id = keys.key_id(ring.current_public)
    labels: list[LabelPrint] = []
    views: list[render.LabelView] = []
    for serial in range(first_serial, first_serial + request.copies):
        text = sign(ring.private_key, *fields, serial)
        view = render.build_view(subject, text, reprint=request.reprint, now=now, serial=serial,
                                 stock=stock)
        label = LabelPrint(
            label_id=new_label_id(),
            item_id=subject.item_id,
            kind_code=subject.kind_code,
            coi_id=subject.coi_id,
            payload_digest=signing.payload_digest(text),
            key_id=key_id,
            format=request.format,
            copies=1,
            workstation=request.workstation,
            reprint=request.reprint,
            reason=request.reason,
            status_banner=view.banner,
            printed_by=user_id,
            printed_at=now,
            serial=serial,
            content_digest=content_digest,
            replaces=replaces,
        )
        if record:
            session.add(label)
        labels.append(label)
        views.append(view)
    if record:
        supersede(session, item_id, content_digest, legacy_digest(subject),
                   labels[0].label_id, user_id)
    return labels, views


def _signed_fields(subject: LabelSubject) -> tuple[str, str, str, datetime | None]:
    """What a label's payload signs: kind code, item id, COI id, expiry."""
    return subject.kind_code, subject.item_id, subject.coi_id, subject.expires_at


def legacy_digest(subject: LabelSubject) -> str:
    """A 6-field label of the same content signed with the current key has this digest."""
    return signing.payload_digest(sign(signing.keyring().private_key, *_signed_fields(subject)))


def supersede(
    session: Session,
    item_id: str,
    content_digest: str,
    legacy: str,
    new_label_id: str,
    user_id: int,
) -> None:
    """Labels of the item with another content (e.g. a corrected expiry) are voided:
    two valid labels saying different things about one container must never exist.
    Copies with the same content (other serials) stay valid."""
    stale = session.execute(
        select(LabelPrint.label_id, LabelPrint.payload_digest)
        .outerjoin(LabelVoid, LabelVoid.label_id == LabelPrint.label_id)
        .where(
            LabelPrint.item_id == item_id,
            LabelPrint.label_id != new_label_id,
            LabelVoid.id.is_(None),
            or_(
                and_(LabelPrint.serial.is_not(None), LabelPrint.content_digest != content_digest),
                # 6-field labels: only their whole payload is known.
                and_(LabelPrint.serial.is_(None), LabelPrint.payload_digest != legacy),
            ),
        )
    ).all()
    for label_id, old_digest in stale:
        reason = f"superseded by {new_label_id}: the label content changed"
        with audit.reason(session, reason):
            session.add(
                LabelVoid(
                    label_id=label_id,
                    payload_digest=old_digest,
                    reason=reason,
                    voided_by=user_id,
                )
            )


def render_views(views: list[render.LabelView], request: PrintRequest) -> bytes:
    if request.format == "png":
        return render.render_png(views[0])
    if request.format == "svg":
        return render.render_svg(views[0]).encode("utf-8")
    if request.format == "pdf":
        return render.render_pdf_pages(views)
    # One label format per copy: each copy has its own payload (no ^PQ of one format).
    return "".join(render.render_zpl(view, dpi=request.dpi, copies=1) for view in views).encode(
        "utf-8"
    )


def print_label(
    session: Session, item_id: str, request: PrintRequest, *, user_id: int
) -> PrintedLabel:
    """Render the item's label, one per copy, and record each copy (GMP record, audited)."""
    request = validate_request(request)
    if request.copies > 1 and request.format in ("png", "svg"):
        raise field_error(
            "copies", "a PNG or SVG holds one label: print several copies as PDF or ZPL"
        )
    with audit.reason(session, request.reason):
        labels, views = prepare(session, item_id, request, user_id)
        session.flush()
    return printed(labels, views, request)


def printed(
    labels: list[LabelPrint], views: list[render.LabelView], request: PrintRequest
) -> PrintedLabel:
    first = labels[0]
    return PrintedLabel(
        labels,
        lambda: render_views(views, request),
        MEDIA_TYPES[request.format],
        f"{first.item_id}_{first.label_id}.{request.format}",
        [view.payload for view in views],
    )


def print_sheet(
    session: Session, item_ids: list[str], request: PrintRequest, *, user_id: int
) -> PrintedLabel:
    """A PDF sheet with one label per item (each print recorded)."""
    unique = list(dict.fromkeys(i.strip().upper() for i in item_ids if i.strip()))
    if not unique:
        raise field_error("items", "name at least one item")
    if len(unique) > MAX_SHEET_ITEMS:
        raise field_error("items", f"at most {MAX_SHEET_ITEMS} items per sheet")
    request = validate_request(
        PrintRequest(**{**request.__dict__, "format": "pdf", "copies": 1})
    )
    labels, views = [], []
    with audit.reason(session, request.reason):
        for item_id in sorted(unique):  # a fixed lock order: no deadlock between sheets
            recorded, shown = prepare(session, item_id, request, user_id)
            labels.extend(recorded)
            views.extend(shown)
        session.flush()
    order = {item_id: n for n, item_id in enumerate(unique)}
    pairs = sorted(zip(labels, views, strict=True), key=lambda p: order[p[0].item_id])
    sheet = [v for _, v in pairs]
    return PrintedLabel(
        [label for label, _ in pairs],
        lambda: render.render_pdf_sheet(sheet, request.paper),
        MEDIA_TYPES["pdf"],
        f"labels_{len(pairs)}_{request.paper}.pdf",
        [v.payload for _, v in pairs],
    )


def _check_fit(subject: LabelSubject, stock: str, now: datetime) -> None:
    """Before anything is recorded: the label must fit its stock legibly."""
    text = sign(signing.keyring().private_key, *_signed_fields(subject), MAX_SERIAL_SHOWN)
    probe = render.build_view(subject, text,
                              now=now, serial=MAX_SERIAL_SHOWN, stock=stock, reprint=True)
    try:
        render.check_fit(probe)
    except render.LabelDoesNotFit as exc:
        raise conflict("label_does_not_fit", str(exc)) from None


# The widest copy number a label shows; the fit check uses it.
MAX_SERIAL_SHOWN = 9999


def preview_payload(subject: LabelSubject) -> str:
    """What a preview's code carries: the label's fields under PREVIEW, no signature,
    so every scan refuses it (labels.payload.parse: malformed, "a preview")."""
    expiry = format_expiry(subject.expires_at)
    return (f"{render.PREVIEW_PREFIX}:{subject.kind_code}:{subject.item_id}:"
            f"{subject.coi_id}:{expiry}:NOT-A-LABEL")


def preview_label(session: Session, item_id: str, request: PrintRequest) -> PrintedLabel:
    """A marked preview of the item's label: records no print, its code never
    verifies, so the first real print afterwards is still the original (issue 15)."""
    request = validate_request(PrintRequest(**{**request.__dict__, "copies": 1,
                                                "reprint": False, "reason": None}))
    subject = subjects().subject(session, item_id)
    stock = stock_for(session, subject.site_code, subject.kind)
    now = utcnow()
    _check_fit(subject, stock, now)
    view = render.build_view(subject, preview_payload(subject), now=now, stock=stock,
                             preview=True)
    return PrintedLabel([], lambda: render_views([view], request), MEDIA_TYPES[request.format],
                        f"{subject.item_id}_PREVIEW.{request.format}", [])
