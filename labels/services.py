"""Label rules: signing and checking payloads, print control (record, reprint, void,
replace).

Other domains call only the functions of this module (DEVELOPING.md). Identity
is imported lazily inside functions (identity imports this module at its top).

Print control (SPEC §4). Every printed copy carries its own serial in the signed
payload (``GMP1:...:<expiry>:<serial>:<signature>``), one ``label_print`` row per
copy, so copies can be told apart by what they encode:
- the first print of an item is the original (its copies numbered 1..N); any later
  print is a reprint (``reprint=true`` with a reason, marked REPRINT on the label);
  asking for a second original is refused (409 ``already_printed``);
- voiding a copy voids that copy only: its payload fails every online check from
  then on, the item's other copies stay valid. ``replace`` voids a damaged copy and
  prints its replacement (a new serial) in one transaction. Voids and replacements
  are for users of the item's current site and QA (403 ``wrong_site``);
- labels printed before serials carry the 6-field payload, the same on all copies
  of that print: they keep verifying until voided, and voiding one voids all of its
  identical copies (they cannot be told apart);
- printing a label whose content differs from earlier labels of the item (e.g. a
  corrected expiry) voids those earlier labels ("superseded"), so one container
  never has two valid labels that say different things.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import and_, bindparam, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from gmp_mes import audit
from gmp_mes.accounts import Person
from gmp_mes.clock import utcnow
from gmp_mes.errors import DomainError, Forbidden, NotFound, conflict, field_error
from gmp_mes.models import User
from labels import keys, render
from labels.models import (
    LabelFormat,
    LabelPrint,
    LabelPrinter,
    LabelPrintJob,
    LabelStock,
    LabelVoid,
    PrintJobStatus,
)
from labels.payload import (
    InvalidLabel,
    LabelPayload,
    format_expiry,
    normalise_scan,
    parse,
    sign,
    signed_content,
    verify,
)

__all__ = [
    "InvalidLabel",
    "LabelPayload",
    "PayloadCheck",
    "check_payload",
    "normalise_scan",
    "payload_digest",
    "payload_for_item",
    "verify_offline",
]

log = logging.getLogger(__name__)

# Set by labels.init_app from the settings of the application last created, for
# callers without an application context (scheduler threads, tests' sessions).
_default_key_path: Path | None = None


class SigningKeyUnavailable(DomainError):
    """A configuration fault, not bad input: the installation has no usable key."""

    status, code, title = 503, "signing_key_unavailable", "Service unavailable"


class WrongSite(Forbidden):
    """Voids and replacements of an item's labels: its current site's users and QA."""

    code = "wrong_site"


@dataclass(frozen=True)
class PayloadCheck:
    """Result of an online check. ``payload`` is what the text says (parsed), but it
    is trustworthy only when ``reasons`` is empty."""

    payload: LabelPayload | None
    reasons: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons


def set_default_key_path(path: Path) -> None:
    global _default_key_path
    _default_key_path = Path(path)


def key_path() -> Path:
    if has_app_context():
        return Path(current_app.config["GMP_SETTINGS"].signing_key)
    if _default_key_path is None:
        raise SigningKeyUnavailable("no application configured: the signing key is unknown")
    return _default_key_path


def keyring() -> keys.KeyRing:
    try:
        return keys.keyring(key_path())
    except keys.SigningKeyError as exc:
        raise SigningKeyUnavailable(str(exc)) from exc


def signing_key_ids(session: Session) -> set[str]:
    """Ids of every key that signed a label in this database (backups record them)."""
    return set(session.scalars(select(LabelPrint.key_id).distinct()))


def unknown_signing_keys(session: Session, key_path: Path) -> list[str]:
    """Key ids that signed labels here but are neither the key at ``key_path`` nor one of
    its retired public keys: a new key made now would make those labels fail as forged."""
    known = {keys.key_id(k) for k in keys.retired_public_keys(key_path)}
    if key_path.exists():
        known.add(keys.key_id(keys.load_private(key_path).public_key()))
    return sorted(signing_key_ids(session) - known)


def payload_digest(text: str) -> str:
    """SHA-256 of the normalised scan text (any text: a refused scan is digested too)."""
    return hashlib.sha256(normalise_scan(text).encode("utf-8", "replace")).hexdigest()


def _canonical(identifier: str) -> str:
    return (identifier or "").strip().upper()


def sign_payload(kind_code: str, subject_id: str, coi_id: str, expires_at: datetime | None) -> str:
    return sign(keyring().private_key, kind_code, subject_id, coi_id, expires_at)


def payload_for_item(session: Session, item_id: str) -> str:
    """The signed 6-field payload (no serial, no print record) of the item's current
    label data, as labels carried before serials (404 when no such item). For the
    demo, benchmarks and tests; printed labels carry a serial per copy."""
    from identity import services as identity

    data = identity.label_data(session, item_id)
    return sign_payload(data["kind_code"], data["item_id"], data["coi_id"], data["expires_at"])


def check_payload(session: Session, raw: str) -> PayloadCheck:
    """Online check of scanned text: structure, signature, not voided. Never raises for
    bad input; reason codes ``malformed``, ``bad_signature``, ``voided``."""
    try:
        payload = parse(raw)
    except InvalidLabel as exc:
        return PayloadCheck(None, [(exc.code, exc.message)])
    try:
        verify(payload, keyring().public_keys)
    except InvalidLabel as exc:
        return PayloadCheck(payload, [(exc.code, exc.message)])
    digest = payload_digest(payload.text)
    if payload.serial is None:
        # A 6-field label from before serials: valid unless its print was voided.
        voided_by = _void_of(session, digest)
        if voided_by is not None:
            return PayloadCheck(
                payload, [("voided", f"this label was voided ({voided_by}); it must not be used")]
            )
        return PayloadCheck(payload, [])
    copy = session.connection().execute(_COPY_OF_PAYLOAD, {"digest": digest}).first()
    if copy is None:
        # Signed with our key but never recorded as printed: not a label we issued.
        return PayloadCheck(
            payload,
            [("unknown_copy", f"copy {payload.serial} of this label was never recorded as "
                              "printed; it must not be used")],
        )
    if copy.voided:
        return PayloadCheck(
            payload,
            [("voided", f"this label copy was voided ({copy.label_id}, copy {payload.serial}); "
                        "it must not be used")],
        )
    return PayloadCheck(payload, [])


# Built once: check_payload runs on every scan.
_VOID_OF_PAYLOAD = (
    select(LabelVoid.__table__.c.label_id)
    .where(LabelVoid.__table__.c.payload_digest == bindparam("digest"))
    .limit(1)
)
_printed, _voids = LabelPrint.__table__, LabelVoid.__table__
# The printed copy a serial payload names, and whether it is voided: one indexed read.
_COPY_OF_PAYLOAD = (
    select(_printed.c.label_id, _voids.c.id.is_not(None).label("voided"))
    .select_from(_printed.outerjoin(_voids, _voids.c.label_id == _printed.c.label_id))
    .where(_printed.c.payload_digest == bindparam("digest"))
    .limit(1)
)


def _void_of(session: Session, digest: str) -> str | None:
    """The voided label whose payload has this digest, if any."""
    return session.connection().execute(_VOID_OF_PAYLOAD, {"digest": digest}).scalar()


def verify_offline(raw: str, public_key_paths: list[Path] | tuple[Path, ...]) -> LabelPayload:
    """Offline check with public key files only (no database: voids are not known).

    Raises InvalidLabel (code ``malformed`` or ``bad_signature``), or
    keys.SigningKeyError when a key file cannot be read.
    """
    if not public_key_paths:
        raise keys.SigningKeyError("no public key given")
    public_keys = [k for p in public_key_paths for k in keys.load_public_keys(Path(p))]
    payload = parse(raw)
    verify(payload, public_keys)
    return payload


def new_label_id() -> str:
    """``LBL-`` + 10 characters of base32 (QR alphanumeric, 50 random bits)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "LBL-" + "".join(secrets.choice(alphabet) for _ in range(10))


def labels_of_item(session: Session, item_id: str) -> list[LabelRecord]:
    """Every printed copy of the item, oldest first, with its void and replacement."""
    printer, voider = aliased(User), aliased(User)
    successor = aliased(LabelPrint)
    rows = session.execute(
        select(LabelPrint, LabelVoid, printer.username, voider.username, successor.label_id)
        .join(printer, printer.id == LabelPrint.printed_by)
        .outerjoin(LabelVoid, LabelVoid.label_id == LabelPrint.label_id)
        .outerjoin(voider, voider.id == LabelVoid.voided_by)
        .outerjoin(successor, successor.replaces == LabelPrint.label_id)
        .where(LabelPrint.item_id == _canonical(item_id))
        .order_by(LabelPrint.printed_at, LabelPrint.id)
    ).all()
    return [
        LabelRecord(
            label_id=label.label_id,
            item_id=label.item_id,
            serial=str(label.serial) if label.serial is not None else None,
            format=label.format,
            copies=label.copies,
            workstation=label.workstation,
            reprint=label.reprint,
            reason=label.reason,
            status_banner=label.status_banner,
            key_id=label.key_id,
            printed_by=printed_by,
            printed_at=label.printed_at,
            voided=void is not None,
            void_reason=void.reason if void is not None else None,
            voided_by=voided_by,
            voided_at=void.voided_at if void is not None else None,
            replaces=label.replaces,
            replaced_by=replaced_by,
        )
        for label, void, printed_by, voided_by, replaced_by in rows
    ]


# --- print control -----------------------------------------------------------------------

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
    sheet holds neither the SQLite writer lock nor PostgreSQL row locks (issue 13)."""

    labels: list[LabelPrint]
    render: Callable[[], bytes]
    media_type: str
    filename: str
    payloads: list[str]

    @cached_property
    def content(self) -> bytes:
        return self.render()


@dataclass(frozen=True)
class LabelRecord:
    """One printed copy of an item's label as the item page and API show it (for a
    6-field label from before serials: one print of ``copies`` identical copies)."""

    label_id: str
    item_id: str
    serial: str | None
    format: str
    copies: int
    workstation: str | None
    reprint: bool
    reason: str | None
    status_banner: str | None
    key_id: str
    printed_by: str
    printed_at: datetime
    voided: bool
    void_reason: str | None
    voided_by: str | None
    voided_at: datetime | None
    replaces: str | None = None
    replaced_by: str | None = None


def _validate_request(request: PrintRequest) -> PrintRequest:

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


def _prepare(
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
    from identity import services as identity

    # Lock the item: two workstations printing the "first" label at once must not
    # both produce originals, nor two copies get one serial.
    item_id = identity.get_item(session, item_id, for_update=True).item_id  # canonical id
    _fail_stale_jobs(session, item_id)
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
    data = identity.label_data(session, item_id)
    ring = keyring()
    fields = (data["kind_code"], data["item_id"], data["coi_id"], data["expires_at"])
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
    stock = stock_for(session, data.get("site_code"), data["kind"])
    _check_fit(data, stock, now)
    first_serial = _next_serial(session, item_id)
    key_id = keys.key_id(ring.current_public)
    labels: list[LabelPrint] = []
    views: list[render.LabelView] = []
    for serial in range(first_serial, first_serial + request.copies):
        text = sign(ring.private_key, *fields, serial)
        view = render.build_view(data, text, reprint=request.reprint, now=now, serial=serial,
                                 stock=stock)
        label = LabelPrint(
            label_id=new_label_id(),
            item_id=data["item_id"],
            kind_code=data["kind_code"],
            coi_id=data["coi_id"],
            payload_digest=payload_digest(text),
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
        _supersede(session, item_id, content_digest, _legacy_digest(fields),
                   labels[0].label_id, user_id)
    return labels, views


def _legacy_digest(fields: tuple[Any, ...]) -> str:
    """A 6-field label of the same content signed with the current key has this digest."""
    return payload_digest(sign(keyring().private_key, *fields))


def _supersede(
    session: Session,
    item_id: str,
    content_digest: str,
    legacy_digest: str,
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
                and_(LabelPrint.serial.is_(None), LabelPrint.payload_digest != legacy_digest),
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


def _render(views: list[render.LabelView], request: PrintRequest) -> bytes:
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
    request = _validate_request(request)
    if request.copies > 1 and request.format in ("png", "svg"):
        raise field_error(
            "copies", "a PNG or SVG holds one label: print several copies as PDF or ZPL"
        )
    with audit.reason(session, request.reason):
        labels, views = _prepare(session, item_id, request, user_id)
        session.flush()
    return _printed(labels, views, request)


def _printed(
    labels: list[LabelPrint], views: list[render.LabelView], request: PrintRequest
) -> PrintedLabel:
    first = labels[0]
    return PrintedLabel(
        labels,
        lambda: _render(views, request),
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
    request = _validate_request(
        PrintRequest(**{**request.__dict__, "format": "pdf", "copies": 1})
    )
    labels, views = [], []
    with audit.reason(session, request.reason):
        for item_id in sorted(unique):  # a fixed lock order: no deadlock between sheets
            printed, shown = _prepare(session, item_id, request, user_id)
            labels.extend(printed)
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


# --- stock, preview, networked printers (issue 15) -----------------------------------------

LABEL_KINDS = ("final_product", "starting_material", "intermediate", "qc_sample",
               "retention_sample", "wristband")


def stock_for(session: Session, site_code: str | None, kind: str) -> str:
    """The stock the site loads for this kind of label (default 4 x 2 inch)."""
    if site_code is None:
        return render.DEFAULT_STOCK
    chosen = session.scalar(select(LabelStock.stock).where(
        LabelStock.site_code == site_code, LabelStock.kind == kind))
    return chosen or render.DEFAULT_STOCK


def stocks_of(session: Session, site_code: str) -> dict[str, str]:
    chosen = dict(session.execute(select(LabelStock.kind, LabelStock.stock).where(
        LabelStock.site_code == site_code)).all())
    return {kind: chosen.get(kind, render.DEFAULT_STOCK) for kind in LABEL_KINDS}


def set_stock(session: Session, site_code: str, kind: str, stock: str) -> LabelStock:
    """Choose the stock of one kind of label at a site (admin; audited)."""
    from gmp_mes.models import Site

    if session.scalar(select(Site.code).where(Site.code == site_code)) is None:
        raise NotFound(f"no site {site_code}")
    if kind not in LABEL_KINDS:
        raise field_error("kind", f"must be one of {', '.join(LABEL_KINDS)}")
    if stock not in render.STOCKS:
        raise field_error("stock", f"must be one of {', '.join(render.STOCKS)}")
    row = session.scalar(select(LabelStock).where(
        LabelStock.site_code == site_code, LabelStock.kind == kind).with_for_update())
    if row is None:
        row = LabelStock(site_code=site_code, kind=kind, stock=stock)
        session.add(row)
    else:
        row.stock = stock
    session.flush()
    return row


def _check_fit(data: dict[str, Any], stock: str, now: datetime) -> None:
    """Before anything is recorded: the label must fit its stock legibly."""
    fields = (data["kind_code"], data["item_id"], data["coi_id"], data["expires_at"])
    probe = render.build_view(data, sign(keyring().private_key, *fields, MAX_SERIAL_SHOWN),
                              now=now, serial=MAX_SERIAL_SHOWN, stock=stock, reprint=True)
    try:
        render.check_fit(probe)
    except render.LabelDoesNotFit as exc:
        raise conflict("label_does_not_fit", str(exc)) from None


# The widest copy number a label shows; the fit check uses it.
MAX_SERIAL_SHOWN = 9999


def preview_payload(data: dict[str, Any]) -> str:
    """What a preview's code carries: the label's fields under PREVIEW, no signature,
    so every scan refuses it (labels.payload.parse: malformed, "a preview")."""
    expiry = format_expiry(data["expires_at"])
    return (f"{render.PREVIEW_PREFIX}:{data['kind_code']}:{data['item_id']}:{data['coi_id']}:"
            f"{expiry}:NOT-A-LABEL")


def preview_label(session: Session, item_id: str, request: PrintRequest) -> PrintedLabel:
    """A marked preview of the item's label: records no print, its code never
    verifies, so the first real print afterwards is still the original (issue 15)."""
    from identity import services as identity

    request = _validate_request(PrintRequest(**{**request.__dict__, "copies": 1,
                                                "reprint": False, "reason": None}))
    item_id = identity.get_item(session, item_id).item_id
    data = identity.label_data(session, item_id)
    stock = stock_for(session, data.get("site_code"), data["kind"])
    now = utcnow()
    _check_fit(data, stock, now)
    view = render.build_view(data, preview_payload(data), now=now, stock=stock, preview=True)
    return PrintedLabel([], lambda: _render([view], request), MEDIA_TYPES[request.format],
                        f"{item_id}_PREVIEW.{request.format}", [])


PRINTER_TIMEOUT = 5.0  # seconds to connect and to hand over the label


def printers_of(session: Session, site_code: str | None) -> list[LabelPrinter]:
    if site_code is None:
        return []
    return list(session.scalars(select(LabelPrinter).where(
        LabelPrinter.site_code == site_code, LabelPrinter.active.is_(True)
    ).order_by(LabelPrinter.name)))


def add_printer(session: Session, site_code: str, *, name: str, host: str, port: int = 9100,
                dpi: int = 203) -> LabelPrinter:
    """Configure a networked label printer of a site (admin; audited)."""
    from gmp_mes.models import Site

    if session.scalar(select(Site.code).where(Site.code == site_code)) is None:
        raise NotFound(f"no site {site_code}")
    name, host = (name or "").strip(), (host or "").strip()
    errors: dict[str, list[str]] = {}
    if not name or len(name) > 60:
        errors["name"] = ["1 to 60 characters"]
    if not host or len(host) > 255 or any(c.isspace() for c in host):
        errors["host"] = ["a host name or IP address"]
    if not 1 <= port <= 65535:
        errors["port"] = ["between 1 and 65535"]
    if dpi not in render.ZPL_DPIS:
        errors["dpi"] = ["203 or 300"]
    if errors:
        from gmp_mes.errors import ValidationFailed

        raise ValidationFailed("the printer is not valid", errors=errors)
    if session.scalar(select(LabelPrinter.id).where(
            LabelPrinter.site_code == site_code, LabelPrinter.name == name)) is not None:
        raise conflict("conflict", f"site {site_code} already has a printer {name}")
    printer = LabelPrinter(site_code=site_code, name=name, host=host, port=port, dpi=dpi,
                           active=True)
    session.add(printer)
    session.flush()
    return printer


def printer_timeout() -> float:
    """Seconds to connect to a printer and to hand it a job (``printer_timeout``)."""
    if has_app_context():
        return float(current_app.config["GMP_SETTINGS"].printer_timeout)
    return PRINTER_TIMEOUT


def stale_after(timeout: float | None = None) -> timedelta:
    """A pending job older than this was left by a crash: no send lasts so long."""
    timeout = printer_timeout() if timeout is None else timeout
    return timedelta(seconds=max(60.0, 6 * timeout))


class PrinterDidNotTakeIt(OSError):
    """The printer did not confirm the job (no clean close within the timeout)."""


def send_zpl(host: str, port: int, data: bytes, *, timeout: float = PRINTER_TIMEOUT) -> None:
    """Hand ZPL to a printer over raw TCP (Zebra port 9100): connect, send everything,
    close our side and wait for the printer to close its side. The job counts as taken
    only after that clean close; OSError otherwise (refused, timed out, reset)."""
    import socket

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
        return _render(self.views, self.request)


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
    from identity import services as identity

    printer = _printer_of(session, user, printer_name)
    request = _validate_request(
        PrintRequest(**{**request.__dict__, "format": "zpl", "dpi": printer.dpi}))
    with audit.reason(session, request.reason):
        labels, views = _prepare(session, item_id, request, user.id, record=False)
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
    data = identity.label_data(session, job.item_id)
    legacy = _legacy_digest((data["kind_code"], data["item_id"], data["coi_id"],
                             data["expires_at"]))
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
    from identity import services as identity

    identity.get_item(session, job.labels[0].item_id, for_update=True)  # lock order: item
    row = session.scalar(select(LabelPrintJob).where(LabelPrintJob.job_id == job.job_id)
                         .with_for_update())
    if row is None or row.status != PrintJobStatus.PENDING:
        # Swept as stale while the send ran (the process stalled): it stays failed.
        job.failure = job.failure or (
            f"job {job.job_id} was closed as failed before the printer answered; a label "
            "it printed is not on record and will not verify: destroy it")
        return _printed(job.labels, job.views, job.request)
    now = utcnow()
    if job.failure is not None:
        with audit.reason(session, job.failure):
            row.status, row.failure, row.finished_at = PrintJobStatus.FAILED, job.failure, now
            session.flush()
        return _printed(job.labels, job.views, job.request)
    with audit.reason(session, job.request.reason):
        for label in job.labels:
            label.printed_at = now
            session.add(label)
        first = job.labels[0]
        _supersede(session, first.item_id, first.content_digest, job.legacy_digest,
                   first.label_id, user_id)
        row.status, row.finished_at = PrintJobStatus.PRINTED, now
        session.flush()
    return _printed(job.labels, job.views, job.request)


def print_refusal(job: PrintJob) -> DomainError:
    """409 ``printer_unreachable`` for a job the printer did not take (already recorded
    as failed)."""
    return conflict("printer_unreachable", f"{job.failure}; no print was recorded")


def _fail_stale_jobs(session: Session, item_id: str | None = None) -> list[str]:
    """Pending jobs older than ``stale_after()`` were left by a crash between the two
    transactions: mark them failed (audited); their serials stay unused."""
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
    return _fail_stale_jobs(session)


def sweep_job(app: Any) -> list[str]:
    """Scheduler job (``gmp_mes.app.add_job``): stale printer jobs, in their own
    transaction."""
    with app.app_context(), app.extensions["gmp_mes.db"].transaction(
            actor=audit.Actor.system("labels")) as session:
        return [f"print job {j} failed (stale)" for j in sweep_print_jobs(session)]


def print_jobs_of_item(session: Session, item_id: str) -> list[LabelPrintJob]:
    """The item's printer jobs, newest first (pending and failed ones stay visible)."""
    return list(session.scalars(select(LabelPrintJob).where(
        LabelPrintJob.item_id == _canonical(item_id)).order_by(LabelPrintJob.id.desc())))


# --- void and replace --------------------------------------------------------------------


def _check_site(item_site: str | None, item_id: str, user: Person, what: str) -> None:
    """Only the people where the item is (its current site) and QA may void or replace
    its labels: elsewhere nobody can see which physical copy is damaged."""
    if user.has_role("qa"):
        return
    user_site = user.site.code if user.site is not None else None
    if user_site is None or user_site != item_site:
        raise WrongSite(
            f"{what} the labels of {item_id} is for users of its current site "
            f"{item_site or '-'} and QA; you are at {user_site or 'no site'}"
        )


def _locked_copy(
    session: Session, item_id: str, item_site: str | None, label_id: str, user: Person, what: str
) -> LabelPrint:
    """The copy's row, locked until commit, after the site rule; never an already voided one."""
    label = session.execute(
        select(LabelPrint)
        .where(
            LabelPrint.label_id == _canonical(label_id),
            LabelPrint.item_id == _canonical(item_id),
        )
        .with_for_update()
    ).scalar_one_or_none()
    if label is None:
        raise NotFound(f"no label {printable_id(label_id)} for item {printable_id(item_id)}")
    _check_site(item_site, item_id, user, what)
    if session.execute(select(exists().where(LabelVoid.label_id == label.label_id))).scalar_one():
        raise conflict("already_voided", f"label {label.label_id} is already voided")
    return label


def printable_id(value: str) -> str:
    text = (value or "").strip()[:40]
    return text if text.isprintable() else repr(text)


def _required_reason(reason: str | None, what: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise field_error("reason", f"{what} a label needs a reason")
    return reason


def _void(session: Session, label: LabelPrint, reason: str, user_id: int) -> None:
    with audit.reason(session, reason):
        session.add(
            LabelVoid(
                label_id=label.label_id,
                payload_digest=label.payload_digest,
                reason=reason,
                voided_by=user_id,
            )
        )
        session.flush()


def void_label(
    session: Session, item_id: str, label_id: str, *, reason: str | None, user: Person
) -> LabelRecord:
    """Void one printed copy: its payload fails every online check from now on; the
    item's other copies stay valid (21 CFR 11.10(e): the void is a new record)."""
    from identity import services as identity

    reason = _required_reason(reason, "voiding")
    item = identity.get_item(session, item_id)
    label = _locked_copy(session, item.item_id, item.site_code, label_id, user, "voiding")
    _void(session, label, reason, user.id)
    return next(r for r in labels_of_item(session, item.item_id) if r.label_id == label.label_id)


def replace_label(
    session: Session,
    item_id: str,
    label_id: str,
    *,
    reason: str | None,
    request: PrintRequest,
    user: Person,
) -> PrintedLabel:
    """Void a damaged or lost copy and print its replacement (a new serial, marked
    REPRINT) in one step: both recorded and audited in this transaction, or neither."""
    from identity import services as identity

    reason = _required_reason(reason, "replacing")
    request = _validate_request(
        PrintRequest(**{**request.__dict__, "copies": 1, "reprint": True, "reason": reason})
    )
    # Lock order: the item row (as every print does), then the copy's row.
    item = identity.get_item(session, item_id, for_update=True)
    label = _locked_copy(session, item.item_id, item.site_code, label_id, user, "replacing")
    _void(session, label, f"replaced: {reason}", user.id)
    print_request = PrintRequest(
        **{**request.__dict__, "reason": f"replaces {label.label_id}: {reason}"}
    )
    with audit.reason(session, print_request.reason):
        labels, views = _prepare(
            session, item.item_id, print_request, user.id, replaces=label.label_id
        )
        session.flush()
    return _printed(labels, views, print_request)
