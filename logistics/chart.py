"""The temperature chart of a shipment (SPEC §7b ``/shipments/<id>``): the readings, the
condition's limits, every excursion and gap shaded, drawn by ``gmp_mes.charts``."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from markupsafe import Markup

from gmp_mes import charts
from logistics.models import Shipment
from logistics.services import Readings, Summary

# A 30-day log read every minute has 43,200 readings; a chart 8 inches wide shows about
# 1,000 columns. Each bucket keeps its lowest and highest reading (in time order), so an
# excursion of one reading is never averaged away.
BUCKETS = 1000


def thinned(readings: Readings, buckets: int = BUCKETS) -> tuple[list[datetime], list[float]]:
    times, temps = readings.times, readings.temps
    if len(times) <= 2 * buckets:
        return list(times), list(temps)
    size = len(times) / buckets
    xs: list[datetime] = []
    ys: list[float] = []
    for b in range(buckets):
        lo, hi = int(b * size), int((b + 1) * size)
        window = range(lo, hi)
        low = min(window, key=temps.__getitem__)
        high = max(window, key=temps.__getitem__)
        for i in sorted({low, high}):
            xs.append(times[i])
            ys.append(temps[i])
    return xs, ys


def temperature_chart(shipment: Shipment, readings: Readings, summary: Summary,
                      zone: ZoneInfo) -> charts.Chart:
    xs, ys = thinned(readings)
    described = (f"{summary.readings:,} readings from {summary.min_c:g} to {summary.max_c:g} °C "
                 f"against the condition {shipment.min_c:g} to {shipment.max_c:g} °C; "
                 f"{len(summary.excursions)} excursion(s), {len(summary.gaps)} gap(s)")
    return charts.Chart(
        title=f"Temperature log of shipment {shipment.shipment_id}",
        y_label="°C", alt=f"Temperature chart: {described}", zone=zone,
        series=[charts.Series("reading", xs, ys, style="line")],
        lines=[charts.Line(shipment.min_c, f"min {shipment.min_c:g} °C", "limit"),
               charts.Line(shipment.max_c, f"max {shipment.max_c:g} °C", "limit")],
        # One legend entry per kind: matplotlib leaves out labels that start with "_".
        spans=[*(charts.Span(e.start, e.end, "excursion" if n == 0 else "_excursion",
                             "excursion") for n, e in enumerate(summary.excursions)),
               *(charts.Span(g.start, g.end, "gap" if n == 0 else "_gap", "gap")
                 for n, g in enumerate(summary.gaps))],
        notes=(described,))


def chart_img(shipment: Shipment, readings: Readings, summary: Summary,
              zone: ZoneInfo) -> Markup:
    return charts.img_tag(temperature_chart(shipment, readings, summary, zone),
                          css_class="chart temperature-chart")
