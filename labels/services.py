"""Label rules: signing and checking payloads, print control (record, reprint, void).

Other domains call only the functions of this module (DEVELOPING.md). Identity
is imported lazily inside functions (identity imports this module at its top).

Print control. Ed25519 signatures are deterministic (RFC 8032) and the payload
format of SPEC §4 has no per-print field, so every print of an item's label
carries the same payload, and copies cannot be told apart by what they encode.
Hence:
- the first print of an item is the original; any later print is a reprint
  (``reprint=true`` with a reason, marked REPRINT on the label); asking for a
  second original is refused (409 ``already_printed``);
- voiding a label voids its payload: every physical copy of it fails every
  online check from then on, and that payload is never printed again (409
  ``voided``). A new valid label needs a changed label content (e.g. a corrected
  expiry), which gives a new payload;
- printing a label whose content differs from earlier labels of the item voids
  those earlier labels ("superseded"), so one container never has two valid
  labels that say different things.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path

from flask import current_app, has_app_context
from sqlalchemy import bindparam, exists, select
from sqlalchemy.orm import Session, aliased

from gmp_mes import audit
from gmp_mes.clock import utcnow
from gmp_mes.errors import DomainError, NotFound, conflict, field_error
from gmp_mes.models import User
from labels import keys, render
from labels.models import LabelFormat, LabelPrint, LabelVoid
from labels.payload import (
    InvalidLabel,
    LabelPayload,
    normalise_scan,
    parse,
    sign,
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

# Set by labels.init_app from the settings of the application last created, for
# callers without an application context (scheduler threads, tests' sessions).
_default_key_path: Path | None = None


class SigningKeyUnavailable(DomainError):
    """A configuration fault, not bad input: the installation has no usable key."""

    status, code, title = 503, "signing_key_unavailable", "Service unavailable"


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


def payload_digest(text: str) -> str:
    """SHA-256 of the normalised scan text (any text: a refused scan is digested too)."""
    return hashlib.sha256(normalise_scan(text).encode("utf-8", "replace")).hexdigest()


def _canonical(identifier: str) -> str:
    return (identifier or "").strip().upper()


def sign_payload(kind_code: str, subject_id: str, coi_id: str, expires_at: datetime | None) -> str:
    return sign(keyring().private_key, kind_code, subject_id, coi_id, expires_at)


def payload_for_item(session: Session, item_id: str) -> str:
    """The signed payload of the item's current label data (404 when no such item)."""
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
    voided_by = _void_of(session, payload_digest(payload.text))
    if voided_by is not None:
        return PayloadCheck(
            payload, [("voided", f"this label was voided ({voided_by}); it must not be used")]
        )
    return PayloadCheck(payload, [])


# Built once: check_payload runs on every scan.
_VOID_OF_PAYLOAD = (
    select(LabelVoid.__table__.c.label_id)
    .where(LabelVoid.__table__.c.payload_digest == bindparam("digest"))
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
    """Every print of the item, oldest first, with its void if any (for the item page)."""
    printer, voider = aliased(User), aliased(User)
    rows = session.execute(
        select(LabelPrint, LabelVoid, printer.username, voider.username)
        .join(printer, printer.id == LabelPrint.printed_by)
        .outerjoin(LabelVoid, LabelVoid.label_id == LabelPrint.label_id)
        .outerjoin(voider, voider.id == LabelVoid.voided_by)
        .where(LabelPrint.item_id == _canonical(item_id))
        .order_by(LabelPrint.printed_at, LabelPrint.id)
    ).all()
    return [
        LabelRecord(
            label_id=label.label_id,
            item_id=label.item_id,
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
        )
        for label, void, printed_by, voided_by in rows
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
    """One print of an item's label as the item page and API show it."""

    label_id: str
    item_id: str
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


def _prepare(
    session: Session, item_id: str, request: PrintRequest, user_id: int
) -> tuple[LabelPrint, render.LabelView]:
    """Check the rules for one item, record its print, return the record and its view."""
    from identity import services as identity

    # Lock the item: two workstations printing the "first" label at once must not
    # both produce originals.
    item_id = identity.get_item(session, item_id, for_update=True).item_id  # canonical id
    data = identity.label_data(session, item_id)
    ring = keyring()
    text = sign(
        ring.private_key, data["kind_code"], data["item_id"], data["coi_id"], data["expires_at"]
    )
    digest = payload_digest(text)
    if _void_of(session, digest) is not None:
        raise conflict(
            "voided",
            f"the label of {item_id} was voided; a label with the same content would fail "
            "every check (QA must correct the item record first)",
        )
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
    view = render.build_view(data, text, reprint=request.reprint, now=now)
    label = LabelPrint(
        label_id=new_label_id(),
        item_id=data["item_id"],
        kind_code=data["kind_code"],
        coi_id=data["coi_id"],
        payload_digest=digest,
        key_id=keys.key_id(ring.current_public),
        format=request.format,
        copies=request.copies,
        workstation=request.workstation,
        reprint=request.reprint,
        reason=request.reason,
        status_banner=view.banner,
        printed_by=user_id,
        printed_at=now,
    )
    session.add(label)
    _supersede(session, item_id, digest, label.label_id, user_id)
    return label, view


def _supersede(
    session: Session, item_id: str, digest: str, new_label_id: str, user_id: int
) -> None:
    """Labels of the item with another content (e.g. a corrected expiry) are voided:
    two valid labels saying different things about one container must never exist."""
    stale = session.execute(
        select(LabelPrint.label_id, LabelPrint.payload_digest)
        .outerjoin(LabelVoid, LabelVoid.label_id == LabelPrint.label_id)
        .where(
            LabelPrint.item_id == item_id,
            LabelPrint.payload_digest != digest,
            LabelVoid.id.is_(None),
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


def print_label(
    session: Session, item_id: str, request: PrintRequest, *, user_id: int
) -> PrintedLabel:
    """Render the item's label and record the print (GMP record, audited)."""
    request = _validate_request(request)
    with audit.reason(session, request.reason):
        label, view = _prepare(session, item_id, request, user_id)
        session.flush()

    def content() -> bytes:
        if request.format == "png":
            return render.render_png(view)
        if request.format == "svg":
            return render.render_svg(view).encode("utf-8")
        if request.format == "pdf":
            return render.render_pdf(view)
        return render.render_zpl(view, dpi=request.dpi, copies=request.copies).encode("utf-8")

    return PrintedLabel(
        [label],
        content,
        MEDIA_TYPES[request.format],
        f"{label.item_id}_{label.label_id}.{request.format}",
        [view.payload],
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
    request = _validate_request(PrintRequest(**{**request.__dict__, "format": "pdf"}))
    labels, views = [], []
    with audit.reason(session, request.reason):
        for item_id in sorted(unique):  # a fixed lock order: no deadlock between sheets
            label, view = _prepare(session, item_id, request, user_id)
            labels.append(label)
            views.append(view)
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


def void_label(
    session: Session, item_id: str, label_id: str, *, reason: str | None, user_id: int
) -> LabelRecord:
    """Void a printed label: its payload fails every online check from now on."""
    reason = (reason or "").strip()
    if not reason:
        raise field_error("reason", "voiding a label needs a reason")
    label = session.execute(
        select(LabelPrint)
        .where(
            LabelPrint.label_id == _canonical(label_id),
            LabelPrint.item_id == _canonical(item_id),
        )
        .with_for_update()
    ).scalar_one_or_none()
    if label is None:
        raise NotFound(f"no label {label_id} for item {item_id}")
    if session.execute(select(exists().where(LabelVoid.label_id == label.label_id))).scalar_one():
        raise conflict("already_voided", f"label {label.label_id} is already voided")
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
    return next(r for r in labels_of_item(session, item_id) if r.label_id == label.label_id)
