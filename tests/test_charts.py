"""The core chart helper: what a domain describes is what is drawn, in the site's local
time, the same bytes twice, as an image a page can show under its CSP and a PNG for the
PDF."""

from __future__ import annotations

import base64
import io
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from gmp_mes import charts

T0 = datetime(2026, 12, 1, 22, 30, tzinfo=UTC)  # 23:30 in Berlin


def _chart(**kw) -> charts.Chart:
    base = dict(
        title="Settle plates, room CR-B1", y_label="cfu/4 h", alt="settle plates over time",
        series=[charts.Series("settle_plate", [T0 + timedelta(days=i) for i in range(5)],
                              [0, 1, None, 3, 7])],
        lines=[charts.Line(5, "action limit (grade B)", "action"),
               charts.Line(3, "alert limit", "alert")],
        spans=[charts.Span(T0 + timedelta(days=3), T0 + timedelta(days=4), "excursion")],
        flags=[charts.Flag(T0 + timedelta(days=4), 7, "failed")],
        zone=ZoneInfo("Europe/Berlin"),
    )
    base.update(kw)
    return charts.Chart(**base)


def _text(svg: str) -> str:
    root = ET.fromstring(svg)
    return " ".join(t for t in root.itertext() if t.strip())


def test_the_svg_names_what_it_draws_with_the_site_zone_on_the_time_axis() -> None:
    svg = charts.svg(_chart())
    text = _text(svg)
    for expected in ("Settle plates, room CR-B1", "cfu/4 h", "action limit (grade B)",
                     "alert limit", "excursion", "failed", "Europe/Berlin"):
        assert expected in text
    # the first point is 23:30 in Berlin on 1 December, not 22:30 UTC
    assert "Dec" in text or "12-01" in text


def test_the_same_chart_is_the_same_file() -> None:
    assert charts.svg(_chart()) == charts.svg(_chart())
    assert "<dc:date>" not in charts.svg(_chart())  # no time of drawing in the file
    assert charts.png(_chart()) == charts.png(_chart())


def test_the_page_gets_an_image_with_escaped_alt_text() -> None:
    tag = charts.img_tag(_chart(alt='plates "B1" <today>'))
    assert tag.startswith('<img class="chart" src="data:image/svg+xml;base64,')
    assert 'alt="plates &#34;B1&#34; &lt;today&gt;"' in tag
    encoded = tag.split("base64,", 1)[1].split('"', 1)[0]
    ET.fromstring(base64.b64decode(encoded))  # a whole SVG document


def test_the_pdf_gets_a_png_of_the_size_asked() -> None:
    image = Image.open(io.BytesIO(charts.png(_chart(), dpi=100)))
    assert image.format == "PNG" and image.size == (800, 320)


def test_an_empty_chart_says_so() -> None:
    chart = _chart(series=[charts.Series("none", [], [])], spans=[], flags=[])
    assert chart.empty and "no data yet" in _text(charts.svg(chart))


def test_numeric_axes_bands_and_a_log_scale() -> None:
    chart = charts.Chart(
        title="Expansion forecast", y_label="viable cells", alt="forecast", log_y=True,
        x_label="culture day",
        series=[charts.Series("viable cells", [0, 1, 2, 3], [1e8, 2e8, 4e8, 8e8])],
        bands=[charts.Band("90% prediction interval", [3, 4, 5], [8e8, 1.2e9, 1.8e9],
                           [8e8, 2e9, 4e9])],
        lines=[charts.Line(2e9, "target dose", "target")])
    text = _text(charts.svg(chart))
    assert "culture day" in text and "90% prediction interval" in text
    assert "local time" not in text


@settings(max_examples=15, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(-200, 200, allow_nan=False)), max_size=30))
def test_any_values_draw_a_valid_svg(values: list[float | None]) -> None:
    chart = charts.Chart(title="t", y_label="°C", alt="a",
                         series=[charts.Series("s", list(range(len(values))), values)])
    ET.fromstring(charts.svg(chart))


def test_categories_name_the_x_positions_and_bars_start_at_zero() -> None:
    chart = charts.Chart(
        title="Failure rate", y_label="%", alt="failure rate per process",
        series=[charts.Series("failure rate", [1, 2], [25.0, 0.0], style="bars")],
        x_categories=["CART-AUTO v1", "CART-AUTO v2"], y_from_zero=True)
    text = _text(charts.svg(chart))
    assert "CART-AUTO v1" in text and "CART-AUTO v2" in text

    def patches(c: charts.Chart) -> int:
        root = ET.fromstring(charts.svg(c))
        return sum(e.get("id", "").startswith("patch_") for e in root.iter())

    markers = charts.Chart(title=chart.title, y_label="%", alt=chart.alt,
                           series=[charts.Series("failure rate", [1, 2], [25.0, 0.0],
                                                 style="markers")])
    assert patches(chart) == patches(markers) + 3  # a rectangle per bar and the legend's
    assert charts.svg(chart) == charts.svg(chart)
