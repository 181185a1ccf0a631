"""Label renderers: PNG (300 dpi), SVG, PDF (one label or a sheet, A4/letter) and ZPL.

Pure: a renderer takes a :class:`LabelView` (built once from the item's label data
and its signed payload) and returns bytes or text. Every format carries the same
QR symbol: the payload in alphanumeric mode, error correction M (ISO/IEC 18004),
with a quiet zone of at least 4 modules; ZPL uses the printer's own ``^BQ`` so the
printer draws that symbol itself from the same payload.
"""

from __future__ import annotations

import io
import math
import textwrap
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import qrcode
from PIL import Image, ImageDraw, ImageFont
from qrcode.util import MODE_ALPHA_NUM, QRData

QUIET_ZONE = 4  # modules, ISO/IEC 18004 minimum
ERROR_CORRECTION = qrcode.constants.ERROR_CORRECT_M
PNG_DPI = 300
# Label stock (width x height in inches) a site loads per label kind (issue 15); the
# PNG, SVG, PDF and ZPL of one label have the same size. Default 4 x 2 inch.
STOCKS: dict[str, tuple[float, float]] = {"2x1": (2.0, 1.0), "3x2": (3.0, 2.0),
                                          "4x2": (4.0, 2.0)}
DEFAULT_STOCK = "4x2"
LABEL_INCHES = STOCKS[DEFAULT_STOCK]
ZPL_INCHES = STOCKS[DEFAULT_STOCK]
ZPL_DPIS = (203, 300)
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
_FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/dejavu"),
    Path("/usr/local/share/fonts"),
)


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


def build_view(
    data: Mapping[str, Any],
    payload: str,
    *,
    reprint: bool = False,
    now: datetime | None = None,
    serial: int | str | None = None,
    stock: str = DEFAULT_STOCK,
    preview: bool = False,
) -> LabelView:
    """The eye-readable content for the item's kind (SPEC §4, issue 7).

    ``data`` is identity.services.label_data(); the COI ID printed is the one in the
    signed payload's data, so text and symbol always agree.
    """
    now = now or datetime.now(UTC)
    kind = str(data["kind"])
    coi = str(data["coi_id"])
    expires_at = data.get("expires_at")
    zone = data.get("site_timezone")
    coi_line = Line(f"COI {coi_parts(coi)[0]}", strong=True, coi=coi_parts(coi))
    lines: list[Line] = []

    def expiry_lines() -> None:
        if expires_at is None:
            return
        first, utc = _fmt_time(expires_at, zone)
        lines.append(Line(f"EXP: {first}", strong=True))
        if utc:
            lines.append(Line(f"     ({utc})"))

    def add(label: str, value: Any) -> None:
        if value not in (None, ""):
            lines.append(Line(f"{label} {value}"))

    if kind == "final_product":
        lines.append(Line("FOR AUTOLOGOUS USE ONLY", strong=True))
        lines.append(Line(str(data.get("patient_name") or "-"), strong=True))
        lines.append(Line(f"DOB: {_dob(data.get('date_of_birth'))}"))
        lines.append(coi_line)
        add("Product:", data.get("description"))
        add("Batch:", data.get("batch_number"))
        expiry_lines()
        add("", data.get("storage"))
        if data.get("conditional"):
            lines.append(Line("CONDITIONAL RELEASE - RESULT PENDING", strong=True))
    elif kind == "wristband":
        lines.append(Line(str(data.get("patient_name") or "-"), strong=True))
        lines.append(Line(f"DOB: {_dob(data.get('date_of_birth'))}"))
        lines.append(coi_line)
        add("Site:", data.get("site_code"))
    elif kind == "starting_material":
        lines.append(Line("FOR AUTOLOGOUS USE ONLY", strong=True))
        if data.get("patient_name"):
            lines.append(Line(str(data["patient_name"])))
            lines.append(Line(f"DOB: {_dob(data.get('date_of_birth'))}"))
        lines.append(coi_line)
        add("Collected at:", data.get("site_code"))
        add("", data.get("description"))
        expiry_lines()
        add("", data.get("storage"))
    else:  # intermediate, qc_sample, retention_sample
        lines.append(coi_line)
        add("Batch:", data.get("batch_number"))
        add("", data.get("description"))
        expiry_lines()
        add("", data.get("storage"))
    # The copy's serial beside the item id: which physical copy this is (the same
    # number as in the signed payload), so a damaged one can be named and replaced.
    lines.append(Line(f"{data['item_id']} COPY {serial}" if serial else str(data["item_id"])))
    title = KIND_TITLES.get(kind, kind.replace("_", " ").upper())
    banner = banner_for(data.get("status"), expires_at, now)
    if preview:
        # A preview is never mistaken for a label: marked across the top, and its
        # code is not a signed payload (PREVIEW_PREFIX: every scan refuses it).
        if banner:
            lines.insert(0, Line(banner, strong=True))
        banner = PREVIEW_BANNER
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
        item_id=str(data["item_id"]),
        stock=stock,
        preview=preview,
    )


# --- the QR symbol -----------------------------------------------------------------------


def qr_matrix(payload: str) -> list[list[bool]]:
    """Modules of the symbol (no quiet zone): alphanumeric mode, error correction M."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECTION, border=0)
    code.add_data(QRData(payload, mode=MODE_ALPHA_NUM))
    code.make(fit=True)
    return code.modules  # type: ignore[return-value]


def qr_modules(payload: str) -> int:
    """Modules per side of the symbol the payload needs (version fit only, no matrix)."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECTION, border=0)
    code.add_data(QRData(payload, mode=MODE_ALPHA_NUM))
    return 17 + 4 * code.best_fit()


def qr_image(matrix: Sequence[Sequence[bool]], module: int) -> Image.Image:
    """A mode "1" image of the symbol with its quiet zone, ``module`` pixels per module."""
    side = len(matrix) + 2 * QUIET_ZONE
    white, pad = b"\xff" * side, b"\xff" * QUIET_ZONE
    # One byte per module (0 black, 255 white), then one nearest-neighbour scale.
    rows = [white] * QUIET_ZONE
    rows += [pad + bytes(0 if dark else 255 for dark in row) + pad for row in matrix]
    rows += [white] * QUIET_ZONE
    small = Image.frombytes("L", (side, side), b"".join(rows)).convert("1")
    return small.resize((side * module, side * module), Image.Resampling.NEAREST)


def dark_runs(matrix: Sequence[Sequence[bool]]) -> list[tuple[int, int, int]]:
    """Horizontal runs of dark modules as (x, y, length): few shapes for SVG and PDF."""
    runs = []
    for y, row in enumerate(matrix):
        x, n = 0, len(row)
        while x < n:
            if row[x]:
                start = x
                while x < n and row[x]:
                    x += 1
                runs.append((start, y, x - start))
            else:
                x += 1
    return runs


# --- text layout -------------------------------------------------------------------------

Measure = Callable[[str, float, bool], float]


@dataclass(frozen=True)
class Layout:
    size: float
    rows: tuple[tuple[Line, str], ...]  # (source line, text of this printed row)
    leading: float
    fits: bool = True


def layout_text(
    lines: Sequence[Line],
    width: float,
    height: float,
    measure: Measure,
    *,
    max_size: float,
    min_size: float,
    leading: float = 1.18,
) -> Layout:
    """The largest font size at which every line fits (wrapped) into width x height."""
    size = max_size
    while True:
        rows: list[tuple[Line, str]] = []
        for line in lines:
            if line.coi is not None:
                rows.append((line, line.text))
                continue
            for part in _wrap(line.text, width, size, line.strong, measure):
                rows.append((line, part))
        fits_height = len(rows) * size * leading <= height
        fits_width = all(_row_width(line, text, size, measure) <= width for line, text in rows)
        if (fits_height and fits_width) or size <= min_size:
            return Layout(size, tuple(rows), leading, fits_height and fits_width)
        size = max(min_size, size - max(1.0, size * 0.06))


def _row_width(line: Line, text: str, size: float, measure: Measure) -> float:
    if line.coi is None:
        return measure(text, size, line.strong)
    return measure(text + " ", size, True) + measure(line.coi[1], size, True) + size * 0.5


def _wrap(text: str, width: float, size: float, strong: bool, measure: Measure) -> list[str]:
    if measure(text, size, strong) <= width:
        return [text]
    average = max(measure("ABCDEFGHIJKLMNOPQRSTUVWXYZ", size, strong) / 26, 1.0)
    columns = max(8, int(width / average))
    while columns > 8:
        parts = textwrap.wrap(text, columns, break_long_words=True)
        if all(measure(p, size, strong) <= width for p in parts):
            return parts
        columns -= 2
    return textwrap.wrap(text, columns, break_long_words=True)


# --- fonts -------------------------------------------------------------------------------


def _font_file(bold: bool) -> Path | None:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for folder in _FONT_DIRS:
        if (folder / name).exists():
            return folder / name
    return None


@lru_cache(maxsize=256)
def pil_font(size: int, bold: bool) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = _font_file(bold)
    if path is not None:
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)  # Pillow's bundled font


@lru_cache(maxsize=4096)
def _pil_length(text: str, size: int, bold: bool) -> float:
    return float(pil_font(size, bold).getlength(text))


def pil_measure(text: str, size: float, bold: bool) -> float:
    return _pil_length(text, int(size), bold)


@lru_cache(maxsize=2048)
def _text_mask(text: str, size: int, bold: bool) -> tuple[Image.Image, int, int]:
    """The rendered line as a 1-bit mask with its offset; lines repeat across labels
    ("FOR AUTOLOGOUS USE ONLY", storage, titles), so each is rasterised once."""
    font = pil_font(size, bold)
    left, top, right, bottom = font.getbbox(text)
    mask = Image.new("1", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, font=font, fill=1)
    return mask, left, top


def draw_line(
    image: Image.Image, xy: tuple[int, int], text: str, size: int, bold: bool, *, ink: int = 0
) -> None:
    mask, left, top = _text_mask(text, size, bold)
    image.paste(ink, (xy[0] + left, xy[1] + top), mask)


# --- PNG ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PngPlan:
    """Where everything of a PNG label goes, in pixels: what render_png draws and what
    the legibility test measures (every text size is known before drawing)."""

    width: int
    height: int
    margin: int
    top: int
    banner_size: int | None
    module: int
    x0: int
    title_size: int
    text_top: int
    layout: Layout

    def text_sizes(self) -> list[int]:
        """Every font size on the label (banner, title, REPRINT mark, text rows)."""
        sizes = [self.title_size, int(self.layout.size)]
        return sizes + ([self.banner_size] if self.banner_size else [])


def png_plan(view: LabelView, *, dpi: int = PNG_DPI) -> PngPlan:
    inches = view.inches
    width, height = int(inches[0] * dpi), int(inches[1] * dpi)
    smallest = math.ceil(min_text(dpi))
    margin = dpi // 30
    top = margin
    banner_size = None
    if view.banner:
        bar = max(dpi // 5, int(smallest / 0.62) + 1)
        banner_size = int(bar * 0.62)
        # A long banner on narrow stock: smaller, never below the minimum.
        fitting = int(banner_size * (width - 4 * margin) / max(
            1.0, pil_measure(view.banner, banner_size, True)))
        banner_size = max(smallest, min(banner_size, fitting))
        top = bar + margin
    matrix_side = qr_modules(view.payload) + 2 * QUIET_ZONE
    module = max(1, (height - top - margin) // matrix_side)
    x0 = matrix_side * module + margin
    text_width = width - x0 - margin
    title_size = max(smallest, int(dpi * 0.11))
    title = view.title + (" REPRINT" if view.reprint else "")
    needed = pil_measure(title, title_size, True) + (dpi // 10 if view.reprint else 0)
    if needed > text_width:
        title_size = max(smallest, int(title_size * text_width / needed))
    text_top = top + int(title_size * 1.35)
    layout = layout_text(
        view.lines, text_width, height - text_top - margin, pil_measure,
        max_size=max(dpi * 0.12, smallest), min_size=smallest,
    )
    if not layout.fits or pil_measure(title, title_size, True) > text_width + dpi // 10 or (
            view.banner and banner_size is not None
            and pil_measure(view.banner, banner_size, True) > width - 2 * margin):
        raise LabelDoesNotFit(
            f"the {view.title.lower()} label does not fit {view.stock} inch stock with text "
            f"of at least {MIN_TEXT_MM} mm: choose a larger stock")
    return PngPlan(width, height, margin, top, banner_size, module, x0, title_size, text_top,
                   layout)


def check_fit(view: LabelView) -> None:
    """Raise LabelDoesNotFit unless the label fits its stock with text of at least
    MIN_TEXT_MM. The 300 dpi PNG layout is the reference: the PDF uses the same font
    and geometry, the ZPL the same geometry; all of them never go below the minimum.
    Called before a print is recorded (rendering happens after the commit)."""
    png_plan(view, dpi=PNG_DPI)


def render_png(view: LabelView, *, dpi: int = PNG_DPI) -> bytes:
    """The label on its stock at ``dpi`` (300 by default), 1-bit, with the dpi recorded."""
    plan = png_plan(view, dpi=dpi)
    width, height, margin = plan.width, plan.height, plan.margin
    image = Image.new("1", (width, height), 1)
    draw = ImageDraw.Draw(image)
    top = plan.top
    if view.banner and plan.banner_size:
        bar = plan.top - margin
        draw.rectangle((0, 0, width, bar), fill=0)
        font = pil_font(plan.banner_size, True)
        draw.text((margin * 2, bar // 2), view.banner, font=font, fill=1, anchor="lm")
    matrix = qr_matrix(view.payload)
    symbol = qr_image(matrix, plan.module)
    image.paste(symbol, (0, top))
    x0 = plan.x0
    title_size = plan.title_size
    y = top
    draw_line(image, (x0, y), view.title, title_size, True)
    if view.reprint:
        font = pil_font(title_size, True)
        label = "REPRINT"
        w = int(font.getlength(label))
        draw.rectangle((width - margin - w - 16, y - 2, width - margin, y + title_size + 8), fill=0)
        draw.text((width - margin - w - 8, y + 2), label, font=font, fill=1)
    y = plan.text_top
    layout = plan.layout
    size = int(layout.size)
    step = int(size * layout.leading)
    for line, text in layout.rows:
        font = pil_font(size, line.strong)
        draw_line(image, (x0, y), text, size, line.strong)
        if line.coi is not None:
            _png_boxed(draw, font, x0 + font.getlength(text + " "), y, size, line.coi[1])
        y += step
    out = io.BytesIO()
    image.save(out, "PNG", dpi=(dpi, dpi), optimize=False, compress_level=1)
    return out.getvalue()


def _png_boxed(
    draw: ImageDraw.ImageDraw, font: Any, x: float, y: float, size: int, ch: str
) -> None:
    pad = max(2, size // 8)
    w = font.getlength(ch)
    draw.rectangle(
        (x - pad, y - pad // 2, x + w + pad, y + size + pad), outline=0, width=max(1, pad // 2)
    )
    draw.text((x, y), ch, font=font, fill=0)


# --- SVG ---------------------------------------------------------------------------------


def render_svg(view: LabelView) -> str:
    """A 4 x 2 inch label in user units of 1/100 inch; the symbol as one path."""
    unit = 100  # user units per inch
    inches = view.inches
    smallest = min_text(unit)
    width, height = int(inches[0] * unit), int(inches[1] * unit)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{inches[0]}in" '
        f'height="{inches[1]}in" viewBox="0 0 {width} {height}" '
        f'font-family="DejaVu Sans, Verdana, Arial, sans-serif">',
        f"<title>{xml_escape(view.title)} {xml_escape(view.item_id)}</title>",
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
    ]
    margin, top = 3, 3
    if view.banner:
        bar = 20
        banner_size = max(smallest, min(bar * 0.62, (width - 4 * margin) / max(
            0.01, pil_measure(view.banner, 300, True) / 300)))
        parts.append(f'<rect width="{width}" height="{bar}" fill="#000"/>')
        parts.append(
            f'<text x="{margin * 2}" y="{bar * 0.72:.1f}" font-size="{banner_size:.1f}" '
            f'font-weight="bold" fill="#fff">{xml_escape(view.banner)}</text>'
        )
        top = bar + margin
    matrix = qr_matrix(view.payload)
    side = len(matrix) + 2 * QUIET_ZONE
    module = (height - top - margin) / side
    ox, oy = QUIET_ZONE * module, top + QUIET_ZONE * module
    path = "".join(
        f"M{ox + x * module:.3f} {oy + y * module:.3f}h{n * module:.3f}v{module:.3f}"
        f"h{-n * module:.3f}z"
        for x, y, n in dark_runs(matrix)
    )
    parts.append(
        f'<path class="qr" data-modules="{len(matrix)}" data-module="{module:.4f}" '
        f'data-origin="{ox:.3f},{oy:.3f}" fill="#000" shape-rendering="crispEdges" d="{path}"/>'
    )
    x0 = side * module + margin
    title_size = 11.0
    room = width - margin - x0 - (8 if view.reprint else 0)
    needed = pil_measure(view.title + (" REPRINT" if view.reprint else ""), 300, True) / 300
    title_size = max(smallest, min(title_size, room / needed))
    y = top
    parts.append(
        f'<text x="{x0:.1f}" y="{y + title_size:.1f}" font-size="{title_size:.1f}" '
        f'font-weight="bold">{xml_escape(view.title)}</text>'
    )
    if view.reprint:
        rw = pil_measure("REPRINT", 300, True) / 300 * title_size + 6
        parts.append(
            f'<rect x="{width - margin - rw:.1f}" y="{y}" width="{rw:.1f}" '
            f'height="{title_size + 4:.1f}" fill="#000"/>'
            f'<text x="{width - margin - rw / 2:.1f}" y="{y + title_size:.1f}" '
            f'font-size="{title_size:.1f}" font-weight="bold" fill="#fff" '
            'text-anchor="middle">REPRINT</text>'
        )
    y += title_size * 1.4
    scale = 300 / unit  # measure with the PNG font at 300 dpi, then scale to user units

    def measure(text: str, size: float, bold: bool) -> float:
        return pil_measure(text, size * scale, bold) / scale

    layout = layout_text(
        view.lines, width - x0 - margin, height - y - margin, measure,
        max_size=max(12.0, smallest), min_size=smallest,
    )

    for line, text in layout.rows:
        y += layout.size
        weight = ' font-weight="bold"' if line.strong else ""
        parts.append(
            f'<text x="{x0:.1f}" y="{y:.1f}" font-size="{layout.size:.1f}"{weight}>'
            f"{xml_escape(text)}</text>"
        )
        if line.coi is not None:
            cx = x0 + measure(text + " ", layout.size, True)
            cw = measure(line.coi[1], layout.size, True)
            pad = layout.size * 0.15
            parts.append(
                f'<rect class="check" x="{cx - pad:.1f}" y="{y - layout.size:.1f}" '
                f'width="{cw + 2 * pad:.1f}" height="{layout.size * 1.25:.1f}" fill="none" '
                f'stroke="#000" stroke-width="0.8"/>'
                f'<text x="{cx:.1f}" y="{y:.1f}" font-size="{layout.size:.1f}" '
                f'font-weight="bold">{xml_escape(line.coi[1])}</text>'
            )
        y += layout.size * (layout.leading - 1)
    parts.append("</svg>")
    return "\n".join(parts)


# --- PDF ---------------------------------------------------------------------------------

PAPER = {"a4": (595.2756, 841.8898), "letter": (612.0, 792.0)}  # points
SHEET_CELL = (96 * 72 / 25.4, 48 * 72 / 25.4)  # 96 x 48 mm cells, 2 x 5 on A4 and letter


@lru_cache(maxsize=1)
def _pdf_fonts() -> tuple[str, str]:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    regular, bold = _font_file(False), _font_file(True)
    if regular is None or bold is None:
        return "Helvetica", "Helvetica-Bold"
    pdfmetrics.registerFont(TTFont("GmpSans", str(regular)))
    pdfmetrics.registerFont(TTFont("GmpSans-Bold", str(bold)))
    return "GmpSans", "GmpSans-Bold"


def _pdf_text(text: str) -> str:
    regular, _ = _pdf_fonts()
    if regular == "Helvetica":  # the standard font has no <= or >= glyphs
        return text.replace("≤", "<=").replace("≥", ">=")
    return text


def _draw_pdf_label(canvas: Any, view: LabelView, x: float, y: float, w: float, h: float) -> None:
    """One label with its lower-left corner at (x, y), size w x h points."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    regular, bold = _pdf_fonts()
    margin = 4.0
    canvas.saveState()
    canvas.setLineWidth(0.3)
    canvas.setStrokeGray(0.6)
    canvas.rect(x, y, w, h, stroke=1, fill=0)  # cutting guide
    top = y + h - margin
    if view.banner:
        bar = max(h * 0.14, min_text(72) / 0.6)
        canvas.setFillGray(0)
        canvas.rect(x, y + h - bar, w, bar, stroke=0, fill=1)
        canvas.setFillGray(1)
        canvas.setFont(bold, max(min_text(72), min(bar * 0.6, (w - 2 * margin) / max(
            0.01, stringWidth(view.banner, bold, 1)))))
        canvas.drawString(x + margin, y + h - bar * 0.72, view.banner)
        top = y + h - bar - margin
    canvas.setFillGray(0)
    matrix = qr_matrix(view.payload)
    side = len(matrix) + 2 * QUIET_ZONE
    module = (top - y - margin) / side
    ox, oy = x + QUIET_ZONE * module, top - QUIET_ZONE * module
    path = canvas.beginPath()
    for mx, my, n in dark_runs(matrix):
        path.rect(ox + mx * module, oy - (my + 1) * module, n * module, module)
    canvas.drawPath(path, stroke=0, fill=1)
    x0 = x + side * module + margin
    smallest = min_text(72)
    title_size = max(h * 0.075, smallest)
    room = x + w - margin - x0 - (8 if view.reprint else 0)
    needed = stringWidth(view.title + (" REPRINT" if view.reprint else ""), bold, 1)
    title_size = max(smallest, min(title_size, room / needed))
    canvas.setFont(bold, title_size)
    canvas.drawString(x0, top - title_size, view.title)
    if view.reprint:
        rw = stringWidth("REPRINT", bold, title_size) + 6
        canvas.rect(x + w - margin - rw, top - title_size - 2, rw, title_size + 3, stroke=0, fill=1)
        canvas.setFillGray(1)
        canvas.drawString(x + w - margin - rw + 3, top - title_size, "REPRINT")
        canvas.setFillGray(0)
    cursor = top - title_size * 1.45

    def measure(text: str, size: float, strong: bool) -> float:
        return stringWidth(_pdf_text(text), bold if strong else regular, size)

    layout = layout_text(
        view.lines,
        x + w - margin - x0,
        cursor - y - margin,
        measure,
        max_size=max(h * 0.08, smallest),
        min_size=smallest,
    )

    for line, text in layout.rows:
        cursor -= layout.size
        font = bold if line.strong else regular
        canvas.setFont(font, layout.size)
        canvas.drawString(x0, cursor, _pdf_text(text))
        if line.coi is not None:
            cx = x0 + measure(text + " ", layout.size, True)
            cw = measure(line.coi[1], layout.size, True)
            pad = layout.size * 0.15
            canvas.setStrokeGray(0)
            canvas.setLineWidth(0.6)
            canvas.rect(cx - pad, cursor - pad * 1.5, cw + 2 * pad, layout.size * 1.2, stroke=1)
            canvas.drawString(cx, cursor, line.coi[1])
        cursor -= layout.size * (layout.leading - 1)
    canvas.restoreState()


def render_pdf(view: LabelView) -> bytes:
    """One label on a page of its own size (label printers, wristband printers)."""
    return render_pdf_pages([view])


def render_pdf_pages(views: Sequence[LabelView]) -> bytes:
    """Labels one per page of the label's own size (one page per printed copy)."""
    from reportlab.pdfgen.canvas import Canvas

    if not views:
        raise ValueError("no label to render")
    w, h = views[0].inches[0] * 72, views[0].inches[1] * 72
    out = io.BytesIO()
    canvas = Canvas(out, pagesize=(w, h), invariant=1)
    canvas.setTitle(f"{views[0].title} {views[0].item_id}")
    for view in views:
        _draw_pdf_label(canvas, view, 0, 0, w, h)
        canvas.showPage()
    canvas.save()
    return out.getvalue()


def render_pdf_sheet(views: Sequence[LabelView], paper: str = "a4") -> bytes:
    """Labels in a 2 x 5 grid of 96 x 48 mm cells per page, A4 or US letter."""
    from reportlab.pdfgen.canvas import Canvas

    if paper not in PAPER:
        raise ValueError(f"paper must be one of {', '.join(PAPER)}")
    page_w, page_h = PAPER[paper]
    cell_w, cell_h = SHEET_CELL
    columns, rows = 2, 5
    gap = 6.0
    left = (page_w - columns * cell_w - (columns - 1) * gap) / 2
    bottom = (page_h - rows * cell_h - (rows - 1) * gap) / 2
    out = io.BytesIO()
    canvas = Canvas(out, pagesize=(page_w, page_h), invariant=1)
    canvas.setTitle(f"label sheet ({len(views)} labels)")
    per_page = columns * rows
    for index, view in enumerate(views):
        slot = index % per_page
        if index and slot == 0:
            canvas.showPage()
        col, row = slot % columns, slot // columns
        x = left + col * (cell_w + gap)
        y = bottom + (rows - 1 - row) * (cell_h + gap)
        _draw_pdf_label(canvas, view, x, y, cell_w, cell_h)
    canvas.showPage()
    canvas.save()
    return out.getvalue()


# --- ZPL ---------------------------------------------------------------------------------

# Font 0 (scalable, condensed): average advance ~0.56 of the height at equal width.
_ZPL_ADVANCE = 0.58


def _zpl_measure(text: str, size: float, _bold: bool) -> float:
    return len(text) * size * _ZPL_ADVANCE


def _zpl_field(text: str) -> str:
    """Field data under ``^FH_``: ``^``, ``~`` and ``_`` as hex escapes; UTF-8 under ^CI28."""
    out = []
    for ch in text.replace("≤", "<=").replace("≥", ">="):
        out.append(f"_{ord(ch):02X}" if ch in "^~_" else ch)
    return "".join(out)


def zpl_magnification(modules: int, dpi: int, height_inches: float = 1.0) -> int:
    """Dots per module for symbol plus quiet zone on a label ``height_inches`` high."""
    # Three quarters of the height: the rest of the label width is needed for the text.
    height = int(height_inches * dpi * 0.75)
    return max(1, min(10, height // (modules + 2 * QUIET_ZONE)))


def render_zpl(view: LabelView, *, dpi: int = 203, copies: int = 1) -> str:
    """ZPL II for the label's stock; the printer draws the QR with ^BQ (model 2, ECC M)."""
    if dpi not in ZPL_DPIS:
        raise ValueError("ZPL labels are made for 203 or 300 dpi printers")
    inches = view.inches
    width, height = int(inches[0] * dpi), int(inches[1] * dpi)
    smallest = math.ceil(min_text(dpi))
    # The printer computes the symbol itself; only its size is needed here.
    modules = qr_modules(view.payload)
    mag = zpl_magnification(modules, dpi, inches[1])
    quiet = QUIET_ZONE * mag
    out = ["^XA", "^CI28", f"^PW{width}", f"^LL{height}", "^LH0,0", f"^PQ{copies},0,1,Y"]
    top = 0
    if view.banner:
        bar = max(dpi // 8, int(smallest / 0.7) + 2)
        out.append(f"^FO0,0^GB{width},{bar},{bar}^FS")
        out.append(
            f"^FO{dpi // 40},{bar // 6}^A0N,{int(bar * 0.7)},{int(bar * 0.7)}^FR"
            f"^FH_^FD{_zpl_field(view.banner)}^FS"
        )
        top = bar
    symbol = (modules + 2 * QUIET_ZONE) * mag
    # ^BQN,2,<mag>: normal orientation, model 2. ^FD<ECC><input>,<data>: M = level M,
    # A = automatic input (alphanumeric mode for this character set).
    out.append(f"^FO{quiet},{top + quiet}^BQN,2,{mag}^FDMA,{view.payload}^FS")
    x0 = symbol + dpi // 60
    margin = dpi // 60
    title = max(smallest, int(dpi * 0.09))
    y = top + margin
    out.append(f"^FO{x0},{y}^A0N,{title},{title}^FH_^FD{_zpl_field(view.title)}^FS")
    if view.reprint:
        rw = int(_zpl_measure("REPRINT", title, True)) + 8
        out.append(f"^FO{width - margin - rw},{y - 2}^GB{rw},{title + 4},{title + 4}^FS")
        out.append(f"^FO{width - margin - rw + 4},{y}^A0N,{title},{title}^FR^FDREPRINT^FS")
    y += int(title * 1.25)
    layout = layout_text(
        view.lines,
        width - x0 - margin,
        height - y - margin,
        _zpl_measure,
        max_size=max(dpi * 0.12, smallest),
        min_size=smallest,
    )

    size = max(smallest, int(layout.size))
    step = int(size * layout.leading)
    for line, text in layout.rows:
        out.append(f"^FO{x0},{y}^A0N,{size},{size}^FH_^FD{_zpl_field(text)}^FS")
        if line.coi is not None:
            cx = x0 + int(_zpl_measure(text + " ", size, True))
            cw = int(_zpl_measure(line.coi[1], size, True)) + 4
            out.append(f"^FO{cx - 2},{y - 2}^GB{cw + 2},{size + 3},1^FS")
            out.append(f"^FO{cx},{y}^A0N,{size},{size}^FH_^FD{_zpl_field(line.coi[1])}^FS")
        y += step
    out.append("^XZ")
    return "\n".join(out) + "\n"
