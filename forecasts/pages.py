"""Pages of the forecasts domain: the control charts of a process (SPEC §15).

``/trends`` lists the processes; ``/processes/<code>/trends?attribute=...`` draws the
individuals and moving-range charts of one attribute (``gmp_mes.charts``) with the points
that break a Nelson rule flagged. Reading only: the alerts come from the sweep.
"""

from __future__ import annotations

from flask import Blueprint, render_template, request
from marshmallow import ValidationError

import processes.services as processes
from forecasts import services
from forecasts.model import RULES
from forecasts.schemas import TrendQuerySchema
from gmp_mes import charts
from gmp_mes.errors import ValidationFailed
from gmp_mes.http import db_session, roles_required
from gmp_mes.schemas import field_errors
from processes.definitions import fmt_number

bp = Blueprint("forecasts", __name__, template_folder="templates")
PAGE_ROLES = ("operator", "qc", "qa", "admin")


@bp.route("/trends")
@roles_required(*PAGE_ROLES)
def trends_index() -> str:
    codes = sorted({v.code for v in processes.list_processes(db_session())})
    return render_template("forecasts/trends_index.html", codes=codes)


def chart_images(chart: services.TrendChart) -> tuple[charts.Chart, charts.Chart]:
    """The individuals chart and its moving-range chart (x: batches, oldest first)."""
    a, limits = chart.attribute, chart.limits
    xs = list(range(1, len(chart.points) + 1))
    unit = f" ({a.unit})" if a.unit else ""
    lines: list[charts.Line] = []
    mr_lines: list[charts.Line] = []
    if limits is not None:
        lines = [charts.Line(limits.centre, "centre (released batches)", "centre"),
                 charts.Line(limits.upper, "upper control limit", "limit"),
                 charts.Line(limits.lower, "lower control limit", "limit")]
        mr_lines = [charts.Line(limits.mr_centre, "mean moving range", "centre"),
                    charts.Line(limits.mr_upper, "upper range limit", "limit")]
    flags = [charts.Flag(x, p.value, " ".join(f"R{r}" for r in p.rules))
             for x, p in zip(xs, chart.points, strict=True) if p.rules]
    rests = (f"limits from {limits.baseline} released batches" if limits
             else chart.reason or "")
    individuals = charts.Chart(
        title=f"{a.label}: individuals", y_label=a.unit or "value",
        x_label="batch (oldest to newest)",
        alt=f"Individuals chart of {a.label} over {len(xs)} batches; {rests}; "
            f"{len(flags)} points break a Nelson rule",
        series=(charts.Series("value", xs, [p.value for p in chart.points]),),
        lines=lines, flags=flags)  # how many batches the limits rest on: in the page
    moving = charts.Chart(
        title=f"{a.label}: moving range", y_label=f"moving range{unit}",
        x_label="batch (oldest to newest)", height_in=2.4,
        alt=f"Moving-range chart of {a.label} over {len(xs)} batches",
        series=(charts.Series("moving range", xs,
                              [p.moving_range for p in chart.points]),),
        lines=mr_lines)
    return individuals, moving


@bp.route("/processes/<code>/trends")
@roles_required(*PAGE_ROLES)
def trends_page(code: str) -> tuple[str, int] | str:
    session = db_session()
    attributes = services.attributes(session, code)
    errors: dict[str, list[str]] = {}
    chart = None
    try:
        query = TrendQuerySchema().load(dict(request.args))
        key = query["attribute"] or (attributes[0].key if attributes else None)
        if key is not None:
            chart = services.trend_chart(session, code, key)
    except ValidationError as exc:
        errors, key = field_errors(exc), request.args.get("attribute")
    except ValidationFailed as exc:
        errors, key = dict(exc.errors or {}), request.args.get("attribute")
    images = chart_images(chart) if chart is not None else ()
    page = render_template(
        "forecasts/trends.html", code=code, attributes=attributes, selected=key,
        chart=chart, images=[charts.img_tag(c) for c in images], errors=errors,
        rules=RULES, fmt=fmt_number)
    return (page, 422) if errors else page
