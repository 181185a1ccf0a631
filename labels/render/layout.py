"""Text layout (the largest size at which every line fits, wrapped) and the fonts the
PNG, SVG and PDF measure and draw with (DejaVu Sans, else Pillow's bundled font)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from labels.render.view import Line

_FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/dejavu"),
    Path("/usr/local/share/fonts"),
)

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


def font_file(bold: bool) -> Path | None:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for folder in _FONT_DIRS:
        if (folder / name).exists():
            return folder / name
    return None


@lru_cache(maxsize=256)
def pil_font(size: int, bold: bool) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = font_file(bold)
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
    left, top, right, bottom = (int(v) for v in font.getbbox(text))
    mask = Image.new("1", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, font=font, fill=1)
    return mask, left, top


def draw_line(
    image: Image.Image, xy: tuple[int, int], text: str, size: int, bold: bool, *, ink: int = 0
) -> None:
    mask, left, top = _text_mask(text, size, bold)
    image.paste(ink, (xy[0] + left, xy[1] + top), mask)
