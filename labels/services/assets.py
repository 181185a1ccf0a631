"""Labels of material lots (``LOT``) and equipment (``EQP``), SPEC §11: print control as
for items (one ``asset_label_print`` row per copy, each with its serial in the signed
payload ``GMP1:LOT:<id>:-:<expiry or ->:<serial>:<signature>``; the first print is the
original, any later one a reprint with a reason), marked previews, the printed copies.

The subject lives in a domain above labels (materials, equipment): the caller describes
it (:class:`AssetLabel`) and locks its own row first; labels never imports those domains.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from gmp_mes import audit
from gmp_mes.clock import utcnow
from gmp_mes.errors import conflict, field_error
from gmp_mes.models import User
from labels import keys, render
from labels.models import AssetLabelPrint
from labels.payload import ASSET_KIND_CODES, NO_COI, format_expiry, sign, signed_content
from labels.services import signing
from labels.services._common import canonical
from labels.services.printing import (
    MAX_SERIAL_SHOWN,
    MEDIA_TYPES,
    PrintedLabel,
    PrintRequest,
    render_views,
    validate_request,
)
from labels.services.records import new_label_id
from labels.services.setup import ASSET_STOCK_KINDS, stock_for


@dataclass(frozen=True)
class AssetLabel:
    """What the label of a material lot or a piece of equipment shows and signs (the
    materials and equipment domains build it)."""

    kind_code: str  # "LOT" or "EQP"
    subject_id: str  # LOT-000123, or the equipment id
    title: str  # e.g. "MATERIAL LOT", "EQUIPMENT"
    lines: tuple[str, ...]  # eye-readable lines chosen by the caller
    expires_at: datetime | None  # a lot's expiry (aware UTC), printed in site time + UTC
    site_code: str | None  # whose label stock it is printed on
    site_timezone: str


@dataclass(frozen=True)
class AssetLabelRecord:
    """One printed copy of a lot or equipment label as pages and APIs show it."""

    label_id: str
    kind_code: str
    subject_id: str
    serial: int
    format: str
    workstation: str | None
    reprint: bool
    reason: str | None
    key_id: str
    printed_by: str
    printed_at: datetime


def _checked(subject: AssetLabel) -> AssetLabel:
    kind_code = canonical(subject.kind_code)
    if kind_code not in ASSET_KIND_CODES:
        raise ValueError(f"{subject.kind_code!r} is not an asset label kind (LOT, EQP)")
    if subject.expires_at is not None and subject.expires_at.tzinfo is None:
        raise ValueError("an asset label's expiry must be an aware UTC datetime")
    subject_id = canonical(subject.subject_id)
    # Refuses an id the payload cannot carry (ValueError: a caller's bug, not input).
    signed_content(kind_code, subject_id, NO_COI, subject.expires_at, 1)
    return AssetLabel(kind_code, subject_id, subject.title, tuple(subject.lines),
                      subject.expires_at, subject.site_code, subject.site_timezone)


def _view(subject: AssetLabel, payload: str, *, now: datetime, stock: str,
          serial: int | None = None, reprint: bool = False,
          preview: bool = False) -> render.LabelView:
    return render.build_asset_view(
        kind_code=subject.kind_code, subject_id=subject.subject_id, title=subject.title,
        lines=subject.lines, expires_at=subject.expires_at,
        site_timezone=subject.site_timezone, payload=payload, reprint=reprint, now=now,
        serial=serial, stock=stock, preview=preview)


def _stock_and_fit(session: Session, subject: AssetLabel, now: datetime) -> str:
    """The site's stock for this kind; before anything is recorded, the widest copy
    must fit it legibly (``MIN_TEXT_MM``), else 409 ``label_does_not_fit``."""
    stock = stock_for(session, subject.site_code, ASSET_STOCK_KINDS[subject.kind_code])
    probe_text = sign(signing.keyring().private_key, subject.kind_code, subject.subject_id,
                      NO_COI, subject.expires_at, MAX_SERIAL_SHOWN)
    probe = _view(subject, probe_text, now=now, stock=stock, serial=MAX_SERIAL_SHOWN,
                  reprint=True)
    try:
        render.check_fit(probe)
    except render.LabelDoesNotFit as exc:
        raise conflict("label_does_not_fit", str(exc)) from None
    return stock


def print_asset_label(
    session: Session, subject: AssetLabel, request: PrintRequest, *, user_id: int
) -> PrintedLabel:
    """Record and render the label of a material lot or a piece of equipment, one
    ``asset_label_print`` row per copy (audited), each copy its own serial.

    Print control as for items: the first print is the original (copies 1..N); a later
    print needs ``reprint=True`` and a reason (409 ``already_printed`` otherwise; a
    reprint of a subject never printed is 409 ``not_printed``), marked REPRINT.

    The caller locks its own subject row (the lot, the equipment) until commit before
    calling: that serialises two prints of one subject, so only one is the original and
    no two copies get one serial; the unique index on (kind_code, subject_id, serial)
    backs it up."""
    subject = _checked(subject)
    request = validate_request(request)
    if request.copies > 1 and request.format in ("png", "svg"):
        raise field_error(
            "copies", "a PNG or SVG holds one label: print several copies as PDF or ZPL")
    of_subject = (AssetLabelPrint.kind_code == subject.kind_code,
                  AssetLabelPrint.subject_id == subject.subject_id)
    earlier = session.execute(
        select(AssetLabelPrint.label_id).where(*of_subject).limit(1)).scalar()
    if earlier is not None and not request.reprint:
        raise conflict(
            "already_printed",
            f"{subject.subject_id} already has a label ({earlier}); print again as a reprint "
            "with a reason")
    if earlier is None and request.reprint:
        raise conflict("not_printed",
                       f"{subject.subject_id} has no label yet: print the original first")
    now = utcnow()
    stock = _stock_and_fit(session, subject, now)
    last = session.execute(
        select(func.max(AssetLabelPrint.serial)).where(*of_subject)).scalar()
    first_serial = (last or 0) + 1
    ring = signing.keyring()
    key_id = keys.key_id(ring.current_public)
    labels: list[AssetLabelPrint] = []
    views: list[render.LabelView] = []
    with audit.reason(session, request.reason):
        for serial in range(first_serial, first_serial + request.copies):
            text = sign(ring.private_key, subject.kind_code, subject.subject_id, NO_COI,
                        subject.expires_at, serial)
            label = AssetLabelPrint(
                label_id=new_label_id(),
                kind_code=subject.kind_code,
                subject_id=subject.subject_id,
                serial=serial,
                format=request.format,
                payload_digest=signing.payload_digest(text),
                key_id=key_id,
                workstation=request.workstation,
                reprint=request.reprint,
                reason=request.reason,
                printed_by=user_id,
                printed_at=now,
            )
            session.add(label)
            labels.append(label)
            views.append(_view(subject, text, now=now, stock=stock, serial=serial,
                               reprint=request.reprint))
        session.flush()
    return PrintedLabel(
        labels,
        lambda: render_views(views, request),
        MEDIA_TYPES[request.format],
        f"{subject.subject_id}_{labels[0].label_id}.{request.format}",
        [view.payload for view in views],
    )


def asset_preview_payload(subject: AssetLabel) -> str:
    """What a preview's code carries: the label's fields under PREVIEW, no signature,
    so every scan refuses it (labels.payload.parse: malformed, "a preview")."""
    return (f"{render.PREVIEW_PREFIX}:{subject.kind_code}:{subject.subject_id}:{NO_COI}:"
            f"{format_expiry(subject.expires_at)}:NOT-A-LABEL")


def preview_asset_label(
    session: Session, subject: AssetLabel, request: PrintRequest
) -> PrintedLabel:
    """A marked PREVIEW of the lot's or equipment's label: records nothing, its code
    never verifies, so the first real print afterwards is still the original."""
    subject = _checked(subject)
    request = validate_request(PrintRequest(**{**request.__dict__, "copies": 1,
                                                "reprint": False, "reason": None}))
    now = utcnow()
    stock = _stock_and_fit(session, subject, now)
    view = _view(subject, asset_preview_payload(subject), now=now, stock=stock, preview=True)
    return PrintedLabel([], lambda: render_views([view], request), MEDIA_TYPES[request.format],
                        f"{subject.subject_id}_PREVIEW.{request.format}", [])


def asset_labels_of(session: Session, kind_code: str, subject_id: str) -> list[AssetLabelRecord]:
    """Every printed copy of the lot's or equipment's label, newest first."""
    printer = aliased(User)
    rows = session.execute(
        select(AssetLabelPrint, printer.username)
        .join(printer, printer.id == AssetLabelPrint.printed_by)
        .where(AssetLabelPrint.kind_code == canonical(kind_code),
               AssetLabelPrint.subject_id == canonical(subject_id))
        .order_by(AssetLabelPrint.serial.desc())
    ).all()
    return [
        AssetLabelRecord(
            label_id=label.label_id, kind_code=label.kind_code, subject_id=label.subject_id,
            serial=label.serial, format=label.format, workstation=label.workstation,
            reprint=label.reprint, reason=label.reason, key_id=label.key_id,
            printed_by=username, printed_at=label.printed_at,
        )
        for label, username in rows
    ]
