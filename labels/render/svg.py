"""SVG labels in user units of 1/100 inch, the symbol as one path."""

from __future__ import annotations

from xml.sax.saxutils import escape as xml_escape

from labels.render.layout import layout_text, pil_measure
from labels.render.qr import QUIET_ZONE, dark_runs, qr_matrix
from labels.render.view import LabelView, min_text


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
    y: float = top
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
