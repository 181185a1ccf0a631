"""Charts for pages and records, drawn by matplotlib (one look for every domain).

A domain describes *what* to draw (:class:`Chart`: series, reference lines, shaded spans,
bands, flagged points); this module draws it. Pages embed the SVG as an ``<img>`` (a
``data:`` URI): matplotlib writes inline styles, which the page's Content-Security-Policy
(``style-src 'self'``) would refuse inside the HTML, while an image document is outside
it. The batch-record PDF takes the PNG. Every chart carries a text alternative (``alt``)
for screen readers and for the record.

Time axes are drawn in the site's local time, with the zone named on the axis (SPEC §9):
pass aware datetimes and the site's zone. Output is deterministic (no dates or random ids
in the SVG), so a record rendered twice is the same file.

matplotlib is imported on first use: an application that draws nothing never pays for it.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from markupsafe import Markup

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Number = float | int
X = float | int | datetime

# Okabe-Ito: told apart by people with any common colour-vision deficiency.
PALETTE = ("#0072B2", "#009E73", "#D55E00", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
LINE_KINDS = {
    # kind: (colour, dash, width)
    "action": ("#C0392B", (0, (6, 3)), 1.4),  # a limit that opens an action (deviation)
    "alert": ("#E69F00", (0, (3, 3)), 1.2),  # a warning before the action limit
    "limit": ("#C0392B", (0, (6, 3)), 1.2),  # a specification or control limit
    "centre": ("#555555", "solid", 1.0),  # a centre line or a target
    "target": ("#009E73", (0, (1, 2)), 1.4),
}
SPAN_KINDS = {"excursion": ("#D55E00", 0.18), "gap": ("#888888", 0.22),
              "window": ("#0072B2", 0.10)}


@dataclass(frozen=True)
class Series:
    """Measured values: ``x`` numbers or aware datetimes, ``y`` numbers (None: no value)."""

    name: str
    x: Sequence[X]
    y: Sequence[Number | None]
    style: Literal["line", "markers", "line+markers", "steps", "bars"] = "line+markers"


@dataclass(frozen=True)
class Line:
    """A horizontal reference line (a limit, a centre line, a target)."""

    value: Number
    name: str
    kind: Literal["action", "alert", "limit", "centre", "target"] = "limit"


@dataclass(frozen=True)
class Span:
    """A shaded stretch of the x axis (an excursion, a gap in a log, a time window)."""

    start: X
    end: X
    name: str
    kind: Literal["excursion", "gap", "window"] = "excursion"


@dataclass(frozen=True)
class Band:
    """A filled band between two curves (a prediction interval, an allowed range)."""

    name: str
    x: Sequence[X]
    lower: Sequence[Number]
    upper: Sequence[Number]


@dataclass(frozen=True)
class Flag:
    """A point to draw attention to (a failed result, a broken control-chart rule)."""

    x: X
    y: Number
    label: str


@dataclass(frozen=True)
class Timespan:
    """A horizontal bar from ``start`` to ``end`` on the row ``row`` (a Gantt chart: a
    room's bookings over weeks), labelled inside; ``kind`` "warning" draws it in the
    warning colour."""

    row: str
    start: datetime
    end: datetime
    label: str = ""
    kind: Literal["planned", "warning", "done"] = "planned"


TIMESPAN_KINDS = {"planned": "#0072B2", "warning": "#D55E00", "done": "#888888"}


@dataclass(frozen=True)
class Chart:
    title: str
    y_label: str
    alt: str  # what the chart shows, in words (screen readers, the record)
    x_label: str = ""
    series: Sequence[Series] = ()
    lines: Sequence[Line] = ()
    spans: Sequence[Span] = ()
    bands: Sequence[Band] = ()
    flags: Sequence[Flag] = ()
    zone: ZoneInfo | None = None  # time axes: the site's zone (UTC when None)
    log_y: bool = False
    width_in: float = 8.0
    height_in: float = 3.2
    legend: bool = True
    notes: tuple[str, ...] = field(default=())  # small print under the plot
    # A categorical x axis: the series' x are 1..n and these name them (a process per
    # position in a report); the axis then shows the names, not numbers.
    x_categories: Sequence[str] = ()
    y_from_zero: bool = False  # rates and counts: the axis starts at 0
    # A Gantt chart: bars on named rows (top to bottom), over the time axis ``x_range``.
    timespans: Sequence[Timespan] = ()
    rows: Sequence[str] = ()
    x_range: tuple[datetime, datetime] | None = None

    @property
    def empty(self) -> bool:
        return not any(any(v is not None for v in s.y) for s in self.series) \
            and not self.bands and not self.timespans


# matplotlib's rcParams are process-global; drawing is serialised so a page and a PDF
# rendered by two request threads never see each other's settings half-applied.
_LOCK = threading.Lock()
_CONFIGURED = False


def _configure() -> None:
    global _CONFIGURED
    if _CONFIGURED:
        return
    import matplotlib

    matplotlib.use("Agg", force=False)
    matplotlib.rcParams.update({
        "svg.fonttype": "none",  # text stays text: searchable, smaller
        "svg.hashsalt": "gmp-mes",  # stable element ids: the same chart, the same bytes
        "font.family": "DejaVu Sans",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.color": "#DDDDDD",
        "grid.linewidth": 0.6,
    })
    _CONFIGURED = True


def _local(values: Sequence[X], zone: ZoneInfo | None) -> list[float]:
    """x values as matplotlib draws them: datetimes as the wall-clock time of the site's
    zone (the axis reads as the clock on the cleanroom wall), in matplotlib's day
    numbers; numbers as they are."""
    import matplotlib.dates as mdates

    tz = zone or ZoneInfo("UTC")
    return [float(mdates.date2num(v.astimezone(tz).replace(tzinfo=None)))
            if isinstance(v, datetime) else float(v) for v in values]


def _is_time(chart: Chart) -> bool:
    if chart.timespans or chart.x_range:
        return True
    for s in chart.series:
        if s.x:
            return isinstance(s.x[0], datetime)
    return any(isinstance(b.x[0], datetime) for b in chart.bands if b.x)


def _draw(chart: Chart) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(chart.width_in, chart.height_in), layout="constrained")
    axes = figure.add_subplot()
    zone = chart.zone
    for band in chart.bands:
        axes.fill_between(_local(band.x, zone), band.lower, band.upper, color=PALETTE[0],
                          alpha=0.15, linewidth=0, label=band.name)
    for span in chart.spans:
        colour, alpha = SPAN_KINDS[span.kind]
        start, end = _local([span.start, span.end], zone)
        axes.axvspan(start, end, color=colour, alpha=alpha, linewidth=0, label=span.name)
    if chart.rows:
        _draw_timespans(axes, chart)
    for index, series in enumerate(chart.series):
        _plot_series(axes, series, PALETTE[index % len(PALETTE)], zone)
    for line in chart.lines:
        colour, dash, width = LINE_KINDS[line.kind]
        axes.axhline(line.value, color=colour, linestyle=dash, linewidth=width,
                     label=line.name)
    if chart.flags:
        xs = _local([f.x for f in chart.flags], zone)
        axes.scatter(xs, [f.y for f in chart.flags], s=70, facecolors="none",
                     edgecolors="#C0392B", linewidths=1.6, zorder=5, label="flagged")
        for x, flag in zip(xs, chart.flags, strict=True):
            axes.annotate(flag.label, (x, flag.y), textcoords="offset points",
                          xytext=(0, 8), ha="center", fontsize=7, color="#C0392B")
    _axes_text(axes, chart)
    return figure


def _draw_timespans(axes: Axes, chart: Chart) -> None:
    """Rows top to bottom, each bar clipped to ``x_range`` with its label inside."""
    rows = list(chart.rows)
    low, high = _local(list(chart.x_range), chart.zone) if chart.x_range else (None, None)
    for span in chart.timespans:
        y = len(rows) - 1 - rows.index(span.row)
        start, end = _local([span.start, span.end], chart.zone)
        axes.broken_barh([(start, end - start)], (y - 0.35, 0.7),
                         facecolors=TIMESPAN_KINDS[span.kind], alpha=0.85, linewidth=0)
        if span.label:
            left, right = max(start, low or start), min(end, high or end)
            axes.text((left + right) / 2, y, span.label, ha="center", va="center",
                      fontsize=7, color="white", clip_on=True)
    axes.set_yticks(range(len(rows)), list(reversed(rows)))
    axes.set_ylim(-0.6, len(rows) - 0.4)
    axes.grid(axis="y", visible=False)
    if low is not None and high is not None:
        axes.set_xlim(low, high)


def _plot_series(axes: Axes, series: Series, colour: str, zone: ZoneInfo | None) -> None:
    points = [(x, y) for x, y in zip(_local(series.x, zone), series.y, strict=True)
              if y is not None]
    if not points:
        return
    xs, ys = zip(*points, strict=True)
    if series.style == "steps":
        axes.step(xs, ys, where="post", color=colour, linewidth=1.2, label=series.name)
        return
    if series.style == "bars":
        axes.bar(xs, ys, width=0.6, color=colour, alpha=0.8, label=series.name)
        return
    marker = "o" if "markers" in series.style else None
    linestyle = "-" if "line" in series.style else "none"
    axes.plot(xs, ys, color=colour, marker=marker, markersize=3.5, linestyle=linestyle,
              linewidth=1.3, label=series.name)


def _axes_text(axes: Axes, chart: Chart) -> None:
    axes.set_title(chart.title, loc="left", fontsize=10, fontweight="bold")
    axes.set_ylabel(chart.y_label)
    x_label = chart.x_label
    if _is_time(chart):
        import matplotlib.dates as mdates

        locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        zone_name = (chart.zone or ZoneInfo("UTC")).key
        x_label = f"{x_label} (local time, {zone_name})".strip()
    axes.set_xlabel(x_label)
    if chart.x_categories:
        axes.set_xticks(range(1, len(chart.x_categories) + 1), list(chart.x_categories))
        axes.set_xlim(0.5, len(chart.x_categories) + 0.5)
    if chart.y_from_zero and not chart.log_y:
        axes.set_ylim(bottom=0)
    if chart.log_y:
        axes.set_yscale("log")
    if chart.legend and axes.get_legend_handles_labels()[0]:
        axes.legend(loc="best", fontsize=7, frameon=False)
    if chart.notes:
        # Below the x label: the layout keeps the bottom strip free for them.
        from matplotlib.layout_engine import ConstrainedLayoutEngine

        engine = axes.figure.get_layout_engine()
        if isinstance(engine, ConstrainedLayoutEngine):
            engine.set(rect=(0, 0.06, 1, 0.94))
        axes.figure.text(0.01, 0.01, "  ".join(chart.notes), fontsize=7, color="#555555")
    if chart.empty:
        axes.text(0.5, 0.5, "no data yet", transform=axes.transAxes, ha="center",
                  va="center", color="#777777")


def _render(chart: Chart, fmt: str, dpi: int) -> bytes:
    with _LOCK:
        _configure()
        figure = _draw(chart)
        buffer = io.BytesIO()
        metadata: dict[str, str | None] = {"Date": None} if fmt == "svg" else {}
        figure.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
        return buffer.getvalue()


def svg(chart: Chart) -> str:
    """The chart as an SVG document (UTF-8 text)."""
    return _render(chart, "svg", 72).decode("utf-8")


def png(chart: Chart, *, dpi: int = 150) -> bytes:
    """The chart as PNG (the PDF export embeds this)."""
    return _render(chart, "png", dpi)


def data_uri(chart: Chart) -> str:
    """``data:image/svg+xml;base64,...`` for ``<img src>`` on a page (see module doc)."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg(chart).encode()).decode()


def img_tag(chart: Chart, *, css_class: str = "chart") -> Markup:
    """The ``<img>`` a template renders as it is (the alt text is escaped here)."""
    return Markup('<img class="{}" src="{}" alt="{}">').format(
        css_class, data_uri(chart), chart.alt)
