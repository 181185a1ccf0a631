"""Label renderers: PNG (300 dpi), SVG, PDF (one label or a sheet, A4/letter) and ZPL.

Pure: a renderer takes a :class:`LabelView` (built once from the item's label subject
and its signed payload) and returns bytes or text. Every format carries the same
QR symbol: the payload in alphanumeric mode, error correction M (ISO/IEC 18004),
with a quiet zone of at least 4 modules; ZPL uses the printer's own ``^BQ`` so the
printer draws that symbol itself from the same payload.

One module per renderer (``png``, ``svg``, ``pdf``, ``zpl``) on what they share: the
label's content (``view``), the symbol (``qr``), text layout and fonts (``layout``).
Callers use the names re-exported here (``render.render_pdf_sheet(...)``).
"""

from __future__ import annotations

from labels.render.layout import Layout, Measure, draw_line, layout_text, pil_font, pil_measure
from labels.render.pdf import PAPER, SHEET_CELL, render_pdf, render_pdf_pages, render_pdf_sheet
from labels.render.png import PNG_DPI, PngPlan, check_fit, png_plan, render_png
from labels.render.qr import (
    ERROR_CORRECTION,
    QUIET_ZONE,
    dark_runs,
    qr_image,
    qr_matrix,
    qr_modules,
)
from labels.render.svg import render_svg
from labels.render.view import (
    BANNER_STATUSES,
    DEFAULT_STOCK,
    KIND_TITLES,
    LABEL_INCHES,
    MIN_TEXT_MM,
    MM_PER_INCH,
    PREVIEW_BANNER,
    PREVIEW_PREFIX,
    STOCKS,
    ZPL_INCHES,
    LabelDoesNotFit,
    LabelView,
    Line,
    as_subject,
    banner_for,
    build_asset_view,
    build_view,
    clean_text,
    coi_parts,
    min_text,
    stock_inches,
)
from labels.render.zpl import ZPL_DPIS, render_zpl, zpl_magnification

__all__ = [
    "BANNER_STATUSES",
    "DEFAULT_STOCK",
    "ERROR_CORRECTION",
    "KIND_TITLES",
    "LABEL_INCHES",
    "MIN_TEXT_MM",
    "MM_PER_INCH",
    "PAPER",
    "PNG_DPI",
    "PREVIEW_BANNER",
    "PREVIEW_PREFIX",
    "QUIET_ZONE",
    "SHEET_CELL",
    "STOCKS",
    "ZPL_DPIS",
    "ZPL_INCHES",
    "LabelDoesNotFit",
    "LabelView",
    "Layout",
    "Line",
    "Measure",
    "PngPlan",
    "as_subject",
    "banner_for",
    "build_asset_view",
    "build_view",
    "check_fit",
    "clean_text",
    "coi_parts",
    "dark_runs",
    "draw_line",
    "layout_text",
    "min_text",
    "pil_font",
    "pil_measure",
    "png_plan",
    "qr_image",
    "qr_matrix",
    "qr_modules",
    "render_pdf",
    "render_pdf_pages",
    "render_pdf_sheet",
    "render_png",
    "render_svg",
    "render_zpl",
    "stock_inches",
    "zpl_magnification",
]
