"""What a label shows, independent of the output format: the stock sizes, the minimum
text size, the banners and the lines of each kind of label (:func:`build_view`)."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gmp_mes.registry import LabelSubject

# Label stock (width x height in inches) a site loads per label kind (issue 15); the
# PNG, SVG, PDF and ZPL of one label have the same size. Default 4 x 2 inch.
STOCKS: dict[str, tuple[float, float]] = {"2x1": (2.0, 1.0), "3x2": (3.0, 2.0),
                                          "4x2": (4.0, 2.0)}
DEFAULT_STOCK = "4x2"
LABEL_INCHES = STOCKS[DEFAULT_STOCK]
ZPL_INCHES = STOCKS[DEFAULT_STOCK]
# Legible at arm's length: no text on any label is smaller than this (font size, the
# em height, in millimetres). A label whose content does not fit its stock at this
# size is refused (LabelDoesNotFit) rather than printed smaller: a larger stock is
# needed. (ISO 15223/EN 980 give no figure; 2 mm em, about 8 pt, is the smallest
# text the bench and bedside readers could read on the printed 4 x 2 labels.)
MIN_TEXT_MM = 2.0
MM_PER_INCH = 25.4
PREVIEW_BANNER = "PREVIEW - NOT A LABEL - DO NOT USE"
PREVIEW_PREFIX = "PREVIEW"


class LabelDoesNotFit(ValueError):
    """The label's text does not fit its stock at the minimum text size."""


def min_text(per_inch: float) -> float:
    """MIN_TEXT_MM in the units of a renderer with ``per_inch`` units per inch."""
    return MIN_TEXT_MM / MM_PER_INCH * per_inch


def stock_inches(stock: str) -> tuple[float, float]:
    if stock not in STOCKS:
        raise ValueError(f"label stock must be one of {', '.join(STOCKS)}")
    return STOCKS[stock]


# Item statuses whose labels print only under a banner (issue 7: expired, rejected,
# blocked; and the other states in which the container must not be used).
BANNER_STATUSES = {
    "expired": "EXPIRED - DO NOT USE",
    "rejected": "REJECTED - DO NOT USE",
    "blocked": "BLOCKED - QUALITY HOLD - DO NOT USE",
    "destroyed": "DESTROYED - DO NOT USE",
    # The other final states: a label for such a container is for the record only.
    "administered": "ADMINISTERED - DO NOT USE",
    "consumed": "CONSUMED - DO NOT USE",
}
KIND_TITLES = {
    "final_product": "FINAL PRODUCT",
    "starting_material": "STARTING MATERIAL",
    "intermediate": "INTERMEDIATE",
    "qc_sample": "QC SAMPLE",
    "retention_sample": "RETENTION SAMPLE",
    "wristband": "PATIENT WRISTBAND",
}


# --- what is printed ---------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    text: str
    strong: bool = False  # bold / emphasised
    coi: tuple[str, str] | None = None  # (grouped COI, check character) for the boxed form


@dataclass(frozen=True)
class LabelView:
    """Everything a label shows, independent of the output format."""

    payload: str
    title: str
    lines: tuple[Line, ...]
    banner: str | None = None
    reprint: bool = False
    item_id: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    stock: str = DEFAULT_STOCK
    preview: bool = False

    @property
    def inches(self) -> tuple[float, float]:
        return stock_inches(self.stock)


def clean_text(value: str) -> str:
    """Eye-readable text as a label can carry it: control characters (which would end a
    ZPL line or make the SVG invalid XML), surrogates and invisible format characters
    removed, white space collapsed."""
    out = []
    for ch in value:
        category = unicodedata.category(ch)
        if category == "Cc" or category == "Zl" or category == "Zp":
            out.append(" ")
        elif category in ("Cs", "Co", "Cn", "Cf"):
            continue
        else:
            out.append(ch)
    return " ".join("".join(out).split())


def coi_parts(coi_id: str) -> tuple[str, str]:
    """``A999926000001X`` -> (``A9999 26 000001``, ``X``): the check character is boxed."""
    return f"{coi_id[:5]} {coi_id[5:7]} {coi_id[7:13]}", coi_id[13:]


def _fmt_time(value: datetime, zone: str | None) -> tuple[str, str | None]:
    """(site local time with its zone, UTC) for people: local first (issue 15: one
    clock); UTC alone (None second) when the site keeps UTC."""
    utc = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if not zone or zone == "UTC":
        return utc, None
    try:
        local = value.astimezone(ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError):
        return utc, None
    return local.strftime("%Y-%m-%d %H:%M %Z"), utc


def _dob(value: date | str | None) -> str:
    if value is None:
        return "-"
    return value.isoformat() if isinstance(value, date) else str(value)


def banner_for(status: str | None, expires_at: datetime | None, now: datetime) -> str | None:
    if status in BANNER_STATUSES:
        return BANNER_STATUSES[status]
    if expires_at is not None and expires_at <= now:
        return BANNER_STATUSES["expired"]
    return None


def as_subject(data: LabelSubject | Mapping[str, object]) -> LabelSubject:
    """A label subject, also from a mapping of its fields (tests, benchmarks)."""
    if isinstance(data, LabelSubject):
        return data
    return LabelSubject(**cast("dict[str, Any]", dict(data)))


def expiry_lines(expires_at: datetime | None, zone: str | None) -> list[Line]:
    """The expiry as every label prints it: site local time in bold, UTC beside it."""
    if expires_at is None:
        return []
    first, utc = _fmt_time(expires_at, zone)
    return [Line(f"EXP: {first}", strong=True)] + ([Line(f"     ({utc})")] if utc else [])


def marked_preview(lines: list[Line], banner: str | None) -> str:
    """A preview is never mistaken for a label: marked across the top (any real banner
    moves into the lines), and its code is not a signed payload (PREVIEW_PREFIX: every
    scan refuses it). Returns the banner to print."""
    if banner:
        lines.insert(0, Line(banner, strong=True))
    return PREVIEW_BANNER


def build_view(
    data: LabelSubject | Mapping[str, object],
    payload: str,
    *,
    reprint: bool = False,
    now: datetime | None = None,
    serial: int | str | None = None,
    stock: str = DEFAULT_STOCK,
    preview: bool = False,
) -> LabelView:
    """The eye-readable content for the item's kind (SPEC §4, issue 7).

    ``data`` is the label subject (``gmp_mes.registry.LabelSubject``, identity answers
    it); the COI ID printed is the one in the signed payload's data, so text and symbol
    always agree.
    """
    subject = as_subject(data)
    now = now or datetime.now(UTC)
    kind = subject.kind
    coi = subject.coi_id
    expires_at = subject.expires_at
    zone = subject.site_timezone
    coi_line = Line(f"COI {coi_parts(coi)[0]}", strong=True, coi=coi_parts(coi))
    lines: list[Line] = []

    def add(label: str, value: str | None) -> None:
        if value not in (None, ""):
            lines.append(Line(f"{label} {value}"))

    if kind == "final_product":
        lines.append(Line("FOR AUTOLOGOUS USE ONLY", strong=True))
        lines.append(Line(subject.patient_name or "-", strong=True))
        lines.append(Line(f"DOB: {_dob(subject.date_of_birth)}"))
        lines.append(coi_line)
        add("Product:", subject.description)
        add("Batch:", subject.batch_number)
        lines.extend(expiry_lines(expires_at, zone))
        add("", subject.storage)
        if subject.conditional:
            lines.append(Line("CONDITIONAL RELEASE - RESULT PENDING", strong=True))
    elif kind == "wristband":
        lines.append(Line(subject.patient_name or "-", strong=True))
        lines.append(Line(f"DOB: {_dob(subject.date_of_birth)}"))
        lines.append(coi_line)
        add("Site:", subject.site_code)
    elif kind == "starting_material":
        lines.append(Line("FOR AUTOLOGOUS USE ONLY", strong=True))
        if subject.patient_name:
            lines.append(Line(subject.patient_name))
            lines.append(Line(f"DOB: {_dob(subject.date_of_birth)}"))
        lines.append(coi_line)
        add("Collected at:", subject.site_code)
        add("", subject.description)
        lines.extend(expiry_lines(expires_at, zone))
        add("", subject.storage)
    else:  # intermediate, qc_sample, retention_sample
        lines.append(coi_line)
        add("Batch:", subject.batch_number)
        add("", subject.description)
        lines.extend(expiry_lines(expires_at, zone))
        add("", subject.storage)
    # The copy's serial beside the item id: which physical copy this is (the same
    # number as in the signed payload), so a damaged one can be named and replaced.
    item_id = subject.item_id
    lines.append(Line(f"{item_id} COPY {serial}" if serial else item_id))
    title = KIND_TITLES.get(kind, kind.replace("_", " ").upper())
    banner = banner_for(subject.status, expires_at, now)
    if preview:
        banner = marked_preview(lines, banner)
    stock_inches(stock)
    return LabelView(
        payload=payload,
        title=title,
        lines=tuple(
            Line(clean_text(line.text), line.strong, line.coi)
            for line in lines
            if clean_text(line.text)
        ),
        banner=banner,
        reprint=reprint,
        item_id=item_id,
        stock=stock,
        preview=preview,
    )


def build_asset_view(
    *,
    kind_code: str,
    subject_id: str,
    title: str,
    lines: tuple[str, ...],
    expires_at: datetime | None,
    site_timezone: str,
    payload: str,
    reprint: bool = False,
    now: datetime | None = None,
    serial: int | str | None = None,
    stock: str = DEFAULT_STOCK,
    preview: bool = False,
) -> LabelView:
    """The eye-readable content of a material lot or equipment label (SPEC §11): the
    caller's title and lines (material name and code, supplier lot, storage, type, ...),
    the expiry in the site's local time (bold) with UTC beside it, as on items, and the
    subject id with the copy's serial. An expired lot prints under the EXPIRED banner.
    Every renderer draws the view unchanged."""
    now = now or datetime.now(UTC)
    shown: list[Line] = [Line(text) for text in lines]
    shown.extend(expiry_lines(expires_at, site_timezone))
    # The id in bold (what people match against the lot or logbook), with the copy.
    shown.append(Line(f"{subject_id} COPY {serial}" if serial else subject_id, strong=True))
    banner = banner_for(None, expires_at, now)
    if preview:
        banner = marked_preview(shown, banner)
    stock_inches(stock)
    return LabelView(
        payload=payload,
        title=clean_text(title) or kind_code,
        lines=tuple(Line(clean_text(line.text), line.strong)
                    for line in shown if clean_text(line.text)),
        banner=banner,
        reprint=reprint,
        item_id=subject_id,
        stock=stock,
        preview=preview,
    )
