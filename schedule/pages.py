"""Pages of the schedule domain (SPEC §13): ``/schedule`` and the vein-to-vein report."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("schedule", __name__, template_folder="templates")


# --- the patient timeline and the vein-to-vein report (SPEC §13, §7b) --------------------

import csv  # noqa: E402 - appended section
import io  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

from flask import render_template, request  # noqa: E402
from markupsafe import Markup  # noqa: E402
from marshmallow import ValidationError  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from werkzeug.wrappers import Response  # noqa: E402

from gmp_mes import charts  # noqa: E402
from gmp_mes.accounts import Principal  # noqa: E402
from gmp_mes.errors import ValidationFailed  # noqa: E402
from gmp_mes.http import db_session, roles_required  # noqa: E402
from gmp_mes.schemas import field_errors  # noqa: E402
from schedule import services  # noqa: E402
from schedule.api import REPORT_ROLES  # noqa: E402
from schedule.schemas import VeinToVeinQuerySchema  # noqa: E402

MILESTONE_NAMES = {
    "enrolled": "Enrolled", "collected": "Collected (apheresis)",
    "batch_started": "Batch started", "filled": "Filled", "released": "Released",
    "shipped": "Shipped", "received": "Received", "thawed": "Thawed",
    "administered": "Administered",
}


def span_text(delta: timedelta | None) -> str:
    """A duration as people read it on the page: "20 d 1 h 5 min" (minutes dropped past
    a day)."""
    if delta is None:
        return ""
    sign = "-" if delta < timedelta(0) else ""
    seconds = abs(delta.total_seconds())
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days} d"] if days else []
    parts += [f"{hours} h"] if hours or days else []
    parts += [f"{minutes} min"] if not days else []
    return sign + " ".join(parts or ["0 min"])


def timeline_section(session: Session, user: Principal, coi_id: str
                     ) -> tuple[str, Markup] | None:
    """Provider of ``registry.patient_sections`` (owner "timeline"): the milestones with
    the time since the previous one, for every role (as GET /patients/{coi}/timeline)."""
    timeline = services.patient_timeline(session, coi_id)
    html = render_template("schedule/timeline_section.html", timeline=timeline,
                           names=MILESTONE_NAMES, span_text=span_text,
                           since={d.end: d.delta for d in timeline.durations})
    return "Timeline", Markup(html)


def _report_query() -> tuple[services.VeinToVeinReport | None, dict[str, list[str]]]:
    """The report the query asks for, or the field errors (bad dates, from after to)."""
    try:
        query = VeinToVeinQuerySchema().load(request.args)
    except ValidationError as exc:
        return None, field_errors(exc)
    try:
        return services.vein_to_vein_report(db_session(), query["start"], query["end"]), {}
    except ValidationFailed as exc:
        return None, exc.errors or {}


@bp.route("/reports/vein-to-vein")
@roles_required(*REPORT_ROLES)
def vein_to_vein_page() -> str | tuple[str, int]:
    report, errors = _report_query()
    if report is None:  # the form again with the errors, and this year's report
        report = services.vein_to_vein_report(db_session())
    page = render_template(
        "schedule/vein_to_vein.html", report=report, errors=errors,
        asked={k: request.args.get(k, "") for k in ("from", "to")},
        distribution=charts.img_tag(services.distribution_chart(report)),
        failures=charts.img_tag(services.failure_chart(report)))
    return (page, 422) if errors else page


def _csv(rows: list[list[str]], name: str) -> Response:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds")


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def patient_rows(report: services.VeinToVeinReport) -> list[list[str]]:
    """One row per patient first infused in the period, by COI only (no name, date of
    birth or MRN); times in UTC, vein-to-vein in days."""
    rows = [["coi_id", "process_code", "process_version", "batch_number",
             "collected_at_utc", "administered_at_utc", "vein_to_vein_days"]]
    rows += [[p.coi_id, p.process_code, str(p.process_version), p.batch_number,
              _utc(p.collected_at), _utc(p.administered_at),
              f"{p.days:.3f}"] for p in report.patients]
    return rows


def summary_rows(report: services.VeinToVeinReport) -> list[list[str]]:
    """One row per process version and per process (version empty: all versions)."""
    def fixed(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    rows = [["process_code", "process_version", "patients", "median_days", "p90_days",
             "decided", "rejected", "failure_rate"]]
    rows += [[s.process_code, _cell(s.process_version), str(s.count), fixed(s.median_days),
              fixed(s.p90_days), str(s.decided), str(s.rejected), fixed(s.failure_rate)]
             for s in report.processes]
    return rows


def _csv_report() -> services.VeinToVeinReport:
    report, errors = _report_query()
    if report is None:
        raise ValidationFailed("bad report query", errors=errors)
    return report


@bp.route("/reports/vein-to-vein.csv")
@roles_required(*REPORT_ROLES)
def vein_to_vein_csv() -> Response:
    """The patients of the period (one CSV: a spreadsheet reads one table per file)."""
    report = _csv_report()
    return _csv(patient_rows(report), f"vein-to-vein-{report.start}-{report.end}.csv")


@bp.route("/reports/vein-to-vein-summary.csv")
@roles_required(*REPORT_ROLES)
def vein_to_vein_summary_csv() -> Response:
    """The per-process figures of the period."""
    report = _csv_report()
    return _csv(summary_rows(report),
                f"vein-to-vein-summary-{report.start}-{report.end}.csv")
