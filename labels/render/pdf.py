"""PDF labels: one label per page of its own size, or sheets of 2 x 5 labels on A4 or
US letter (reportlab, with the DejaVu fonts when installed)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from labels.render.layout import font_file, layout_text
from labels.render.qr import QUIET_ZONE, dark_runs, qr_matrix
from labels.render.view import LabelView, min_text

PAPER = {"a4": (595.2756, 841.8898), "letter": (612.0, 792.0)}  # points
SHEET_CELL = (96 * 72 / 25.4, 48 * 72 / 25.4)  # 96 x 48 mm cells, 2 x 5 on A4 and letter


@lru_cache(maxsize=1)
def _pdf_fonts() -> tuple[str, str]:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    regular, bold = font_file(False), font_file(True)
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
