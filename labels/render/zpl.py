"""ZPL II for Zebra printers (203 or 300 dpi): the printer draws the QR symbol itself
with ``^BQ`` (model 2, ECC M) from the same payload."""

from __future__ import annotations

import math

from labels.render.layout import layout_text
from labels.render.qr import QUIET_ZONE, qr_modules
from labels.render.view import LabelView, min_text

ZPL_DPIS = (203, 300)
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
