"""PNG labels (300 dpi, 1-bit) and the fit check every print passes before it is
recorded: the PNG layout is the reference for legibility."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from labels.render.layout import Layout, draw_line, layout_text, pil_font, pil_measure
from labels.render.qr import QUIET_ZONE, qr_image, qr_matrix, qr_modules
from labels.render.view import MIN_TEXT_MM, LabelDoesNotFit, LabelView, min_text

PNG_DPI = 300


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
    draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, x: float,
    y: float, size: int, ch: str,
) -> None:
    pad = max(2, size // 8)
    w = font.getlength(ch)
    draw.rectangle(
        (x - pad, y - pad // 2, x + w + pad, y + size + pad), outline=0, width=max(1, pad // 2)
    )
    draw.text((x, y), ch, font=font, fill=0)
