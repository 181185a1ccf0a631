"""Executed batch record export: JSON, PDF (reportlab) and the expansion curve (gmp_mes.charts,
with the forecast band the registry.expansion_forecast provider adds).

The PDF is what a QA reviewer reads before release (EU GMP Chapter 4.20, Annex
11 §8 printouts): every step with values, limits and pass/fail, every
signature in its Part 11 manifestation, superseded versions with the reason of
the correction, deviations, QC, release, genealogy, custody and the expansion
curve. Nothing here decides anything: it renders ``batches.record``.
"""

from __future__ import annotations

import io
import json
from contextvars import ContextVar
from html import escape
from pathlib import Path
from typing import Any

from markupsafe import Markup
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)
from sqlalchemy.orm import Session

from batches.record import executed_record
from gmp_mes import charts, localtime, registry
from processes.definitions import fmt_number

FONT, FONT_BOLD = "GmpSans", "GmpSans-Bold"
_FONT_CANDIDATES = [
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
     "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
]


def _register_fonts() -> tuple[str, str]:
    """A Unicode TrueType font (°C, patient names) when available, else Helvetica."""
    if FONT in pdfmetrics.getRegisteredFontNames():
        return FONT, FONT_BOLD
    import reportlab

    bundled = Path(reportlab.__file__).parent / "fonts"
    candidates = [*_FONT_CANDIDATES, (str(bundled / "Vera.ttf"), str(bundled / "VeraBd.ttf"))]
    for regular, bold in candidates:
        if Path(regular).exists() and Path(bold).exists():
            pdfmetrics.registerFont(TTFont(FONT, regular))
            pdfmetrics.registerFont(TTFont(FONT_BOLD, bold))
            from reportlab.pdfbase.pdfmetrics import registerFontFamily

            registerFontFamily(FONT, normal=FONT, bold=FONT_BOLD, italic=FONT,
                               boldItalic=FONT_BOLD)
            return FONT, FONT_BOLD
    return "Helvetica", "Helvetica-Bold"


def export_batch(session: Session, batch_number: str, fmt: str) -> tuple[bytes, str]:
    data = executed_record(session, batch_number)
    if fmt == "json":
        return render_json(data), "application/json"
    return render_pdf(data, expansion_overlay(session, batch_number)), "application/pdf"


def render_json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n").encode()


# --- value formatting -------------------------------------------------------------------

def show_value(value: Any, unit: str = "") -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = fmt_number(float(value)) if isinstance(value, int | float) else str(value)
    return f"{text} {unit}".strip()


# The site zone of the record being rendered (render_pdf sets it for its own run).
_ZONE: ContextVar[str] = ContextVar("batch_pdf_zone", default="UTC")


def _signed(signature: dict[str, Any] | None) -> str:
    """A signature's manifestation with the site's local time first, UTC after."""
    return localtime.signature_line(signature, localtime.zone(_ZONE.get()), with_utc=True)


def _dt(text: str | None) -> str:
    """A stored UTC time as the PDF shows it: the site's local time with its zone first,
    UTC after it (issue 15: a record that leaves the site carries both)."""
    if not text:
        return ""
    return localtime.local_and_utc(text, localtime.zone(_ZONE.get()), seconds=True)


# --- PDF ----------------------------------------------------------------------------------

class _Styles:
    def __init__(self) -> None:
        regular, bold = _register_fonts()
        base = getSampleStyleSheet()
        self.regular, self.bold = regular, bold
        self.title = ParagraphStyle("t", parent=base["Title"], fontName=bold, fontSize=16,
                                    leading=19, spaceAfter=4)
        self.h2 = ParagraphStyle("h2", parent=base["Heading2"], fontName=bold, fontSize=12,
                                 leading=15, spaceBefore=8, spaceAfter=4, keepWithNext=1)
        self.h3 = ParagraphStyle("h3", parent=base["Heading3"], fontName=bold, fontSize=10,
                                 leading=12, spaceBefore=6, spaceAfter=2, keepWithNext=1)
        self.body = ParagraphStyle("b", parent=base["BodyText"], fontName=regular, fontSize=8.5,
                                   leading=10.5)
        self.label = ParagraphStyle("l", parent=base["BodyText"], fontName=bold,
                                    fontSize=8.5, leading=10.5)
        self.small = ParagraphStyle("s", parent=self.body, fontSize=7.5, leading=9)
        self.fail = ParagraphStyle("f", parent=self.body, fontName=bold,
                                   textColor=colors.HexColor("#b00020"))
        self.ok = ParagraphStyle("o", parent=self.body, textColor=colors.HexColor("#0a7a2f"))


def _p(text: Any, style: ParagraphStyle) -> Paragraph:
    return Paragraph(escape(str(text if text is not None else "")), style)


def _table(rows: list[list[Any]], widths: list[float], st: _Styles,
           highlight: list[int] | None = None) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1)
    style = [
        ("FONT", (0, 0), (-1, 0), st.bold, 8),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e9edf3")),
        ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#9aa3b0")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
    ]
    for row in highlight or []:
        style.append(("BACKGROUND", (0, row), (-1, row), colors.HexColor("#fbe9ec")))
    table.setStyle(TableStyle(style))
    return table


def _signature_lines(record: dict[str, Any], st: _Styles) -> list[Paragraph]:
    lines = [_p(f"Signed: {_signed(record['signature'])}", st.small)]
    if record.get("signature_binds") is False:
        lines.append(_p("SIGNATURE DOES NOT MATCH THE RECORD: the record was changed after "
                        "signing (21 CFR 11.70)", st.fail))
    if record.get("verifier_signature"):
        lines.append(_p(f"Verified: {_signed(record['verifier_signature'])}", st.small))
    return lines


def _step_flowables(step: dict[str, Any], st: _Styles, width: float) -> list[Any]:
    flow: list[Any] = []
    flags = []
    if step["critical"]:
        flags.append("critical: second-person verification")
    if step["repeatable"]:
        flags.append("repeatable")
    title = f"{step['index'] + 1}. {step['name']} ({step['code']})"
    heading: Paragraph | None = _p(title + (f" - {', '.join(flags)}" if flags else ""), st.h3)
    if not step["records"]:
        flow.append(KeepTogether([heading, _p("Not recorded.", st.body)]))
        return flow
    superseded = {r["id"]: r for r in step["superseded"]}
    for rec in step["records"]:
        label = f"Record #{rec['occurrence']}" if step["repeatable"] else "Record"
        header = f"{label}, version {rec['version']}, performed {_dt(rec['performed_at'])}"
        if rec["items"]:
            header += f"; items created: {', '.join(rec['items'])}"
        if rec.get("scans"):  # a label check: every bag's label scanned and matched
            header += ("; labels scanned and matched: "
                       + ", ".join(f"{x['item_id']} (COI {x['coi_id']})" for x in rec["scans"]))
        if rec.get("resources"):  # the lots and equipment the step used (SPEC §11)
            header += "; used: " + "; ".join(
                ", ".join(str(e.get("label") or e.get("lot_id") or e.get("equipment_id") or e)
                          if isinstance(e, dict) else str(e) for e in entries)
                for entries in rec["resources"].values()
            )
        block: list[Any] = [_p(header, st.body)]
        if heading is not None:  # keep the step title with its first record
            block.insert(0, heading)
            heading = None
        rows: list[list[Any]] = [["Parameter", "Value", "Limits", "Result"]]
        bad_rows = []
        for i, res in enumerate(rec["results"], start=1):
            passed = res["in_limits"]
            rows.append([
                _p(res["name"], st.body), _p(show_value(res["value"], res["unit"]), st.body),
                _p(res["limits"], st.body),
                _p("PASS" if passed else "FAIL - deviation", st.ok if passed else st.fail),
            ])
            if not passed:
                bad_rows.append(i)
        if "bags" in rec["values"]:
            rows.append([_p("Bags filled", st.body), _p(rec["values"]["bags"], st.body),
                         "", ""])
        block.append(_table(rows, [width * 0.38, width * 0.22, width * 0.22, width * 0.18], st,
                            bad_rows))
        block += _signature_lines(rec, st)
        if rec["correction_reason"]:
            block.append(_p(f"Correction reason: {rec['correction_reason']}", st.small))
        # Earlier versions stay visible (21 CFR 11.10(e): changes do not obscure).
        chain = []
        previous = superseded.get(rec["supersedes_id"])
        while previous is not None:
            chain.append(previous)
            previous = superseded.get(previous["supersedes_id"])
        for old in chain:
            values = "; ".join(
                f"{r['name']} = {show_value(r['value'], r['unit'])}" for r in old["results"]
            )
            block.append(_p(
                f"Superseded version {old['version']} ({_dt(old['performed_at'])}): {values}. "
                f"Signed: {_signed(old['signature'])}"
                + (f". Correction reason: {old['correction_reason']}"
                   if old["correction_reason"] else ""),
                st.small,
            ))
        block.append(Spacer(1, 3))
        flow.append(KeepTogether(block))
    return flow


def expansion_overlay(session: Session, batch_number: str) -> registry.ForecastOverlay | None:
    """The forecast drawn on the expansion chart, from the ``registry.expansion_forecast``
    provider (the forecasts domain; batches never imports it). None: no provider, or the
    process declares no forecast."""
    for provider in registry.expansion_forecast.providers():
        found = provider(session, batch_number)
        if found is not None:
            return found
    return None


def curve_charts(points: list[dict[str, Any]],
                 overlay: registry.ForecastOverlay | None = None) -> list[charts.Chart]:
    """The expansion curve (``gmp_mes.charts``): viable cells per culture day with the
    forecast band when there is one, and viability per day. Empty when there is nothing
    to draw. A linear axis, as the curve always had: matplotlib's log axis costs twice
    the drawing time of the whole chart on every page view."""
    cells = [p for p in points if p["viable_cells"] is not None]
    viability = [p for p in points if p["viability"] is not None]
    if not cells and not viability and overlay is None:
        return []
    extra = overlay or registry.ForecastOverlay()
    measured = charts.Series("viable cells", [p["day"] for p in cells],
                             [p["viable_cells"] for p in cells])
    cell_chart = charts.Chart(
        title="Viable cells", y_label="viable cells", x_label="culture day",
        alt="Expansion curve: viable cells per culture day ("
            + (", ".join(f"day {p['day']:g}: {fmt_number(p['viable_cells'])}" for p in cells)
               or "no count yet") + ")"
            + (f". {' '.join(extra.notes)}" if extra.notes else ""),
        series=(measured, *extra.series), bands=extra.bands, lines=extra.lines)
    via_chart = charts.Chart(
        title="Viability", y_label="viability (%)", x_label="culture day", height_in=2.4,
        alt="Viability per culture day (" + (", ".join(
            f"day {p['day']:g}: {p['viability']:g} %" for p in viability) or "none yet") + ")",
        series=(charts.Series("viability", [p["day"] for p in viability],
                              [p["viability"] for p in viability]),), legend=False)
    return [cell_chart, via_chart]


def curve_html(points: list[dict[str, Any]],
               overlay: registry.ForecastOverlay | None = None) -> Markup:
    """The expansion charts as the batch page shows them (CSP-safe ``<img>`` tags)."""
    drawn = curve_charts(points, overlay)
    if not drawn:
        return Markup('<p class="hint">No expansion records yet.</p>')
    # The overlay's notes (the forecast's summary) as text under the charts, not drawn
    # into them: readable, searchable, and a figure without a paragraph of text is quick.
    notes = overlay.notes if overlay else ()
    return Markup("").join([*(charts.img_tag(chart, css_class="chart curve") for chart in drawn),
                            *(Markup('<p class="hint forecast">{}</p>').format(n)
                              for n in notes)])


def _curve_flowables(points: list[dict[str, Any]], overlay: registry.ForecastOverlay | None,
                     width: float, st: _Styles) -> list[Any]:
    drawn = curve_charts(points, overlay)
    if not drawn:
        return [_p("No expansion records.", st.body)]
    flow: list[Any] = []
    for chart in drawn:
        flow.append(Image(io.BytesIO(charts.png(chart)), width=width * 0.8,
                          height=width * 0.8 * chart.height_in / chart.width_in))
    flow.extend(_p(note, st.small) for note in (overlay.notes if overlay else ()))
    return flow


def render_pdf(data: dict[str, Any],
               overlay: registry.ForecastOverlay | None = None) -> bytes:
    token = _ZONE.set(str(data.get("site_timezone") or "UTC"))
    try:
        return _render_pdf(data, overlay)
    finally:
        _ZONE.reset(token)


def _render_pdf(data: dict[str, Any], overlay: registry.ForecastOverlay | None) -> bytes:
    st = _Styles()
    buffer = io.BytesIO()
    page = landscape(A4)
    doc = SimpleDocTemplate(
        buffer, pagesize=page, leftMargin=14 * mm, rightMargin=14 * mm, topMargin=14 * mm,
        bottomMargin=16 * mm, title=f"Executed batch record {data['batch_number']}",
        author="gmp-mes", subject="Executed batch record",
    )
    width = page[0] - 28 * mm
    flow: list[Any] = [_p(f"Executed batch record {data['batch_number']}", st.title)]
    patient = data.get("patient") or {}
    approval = data["process"]["approval_signature"]
    header = [
        ["Product", data["product"], "Batch status", data["status"]],
        ["Process", f"{data['process_code']} version {data['process_version']}",
         "Process approved", _signed(approval) if approval else "not approved"],
        ["COI", data["coi_id"], "Patient", (
            f"{patient.get('initials', '')} born {patient.get('date_of_birth', '')}"
            if patient else "")],
        ["Starting material", data["starting_item_id"], "Manufacturing site", data["site_code"]],
        ["Started", f"{_dt(data['started_at'])} by {data['started_by']}",
         "Completed", _dt(data["completed_at"]) or "in progress"],
    ]
    summary = Table(
        [[_p(c, st.label if i % 2 == 0 else st.body) for i, c in enumerate(row)]
         for row in header],
        colWidths=[width * 0.14, width * 0.36, width * 0.14, width * 0.36],
    )
    summary.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#9aa3b0")),
        ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#e9edf3")),
        ("BACKGROUND", (2, 0), (2, -1), colors.HexColor("#e9edf3")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]))
    flow.append(summary)
    flow.append(_p(f"Process definition digest (SHA-256): {data['process']['digest']}", st.small))

    flow.append(_p("Steps", st.h2))
    for step in data["steps"]:
        flow += _step_flowables(step, st, width)

    flow.append(_p("Expansion curve", st.h2))
    flow += _curve_flowables(data.get("expansion_curve", []), overlay, width, st)

    flow.append(_p("Deviations", st.h2))
    if not data["deviations"]:
        flow.append(_p("No deviations.", st.body))
    for dev in data["deviations"]:
        lines = [_p(f"{dev['number']} - {dev['severity']} - {dev['status']} - {dev['kind']}, "
                    f"opened {_dt(dev['opened_at'])}", st.h3),
                 _p(dev["description"], st.body)]
        if dev["assessment_signature"]:
            lines.append(_p(f"Assessment: {dev['assessment']}", st.body))
            lines.append(_p(f"Assessed: {_signed(dev['assessment_signature'])}",
                            st.small))
        if dev["closure_signature"]:
            lines.append(_p(f"Closure: {dev['closure']}", st.body))
            lines.append(_p(f"Closed: {_signed(dev['closure_signature'])}", st.small))
        flow.append(KeepTogether(lines))

    flow.append(_p("QC release specification and results", st.h2))
    results = {row.get("test"): row for row in (data.get("qc") or []) if isinstance(row, dict)}
    rows: list[list[Any]] = [["Test", "Method", "Specification", "Status", "Result / signature"]]
    for spec in data["qc_specs"]:
        row = results.get(spec["test"], {})
        shown = []
        for res in row.get("results", []) or []:
            value = res.get("value")
            value = res.get("outcome") if value is None else value
            line = (f"v{res.get('version', 1)}: {show_value(value, spec.get('unit') or '')} "
                    f"({'pass' if res.get('passed') else 'fail'})")
            if res.get("superseded"):
                line += f", superseded ({res.get('correction_reason') or 'corrected'})"
            if res.get("invalid"):
                line += f", INVALID: {res.get('invalid_reason') or ''}"
            for label, key in (("recorded", "signature"), ("reviewed", "review_signature"),
                               ("invalidated", "invalidation_signature")):
                if (res.get(key) or {}).get("manifestation"):
                    line += f"; {label}: {_signed(res[key])}"
            shown.append(line)
        status = row.get("status", "no QC data" if data.get("qc") is None else "required")
        rows.append([
            _p(spec["test"] + (" (release before result)" if spec["release_before_result"]
                               else ""), st.body),
            _p(spec.get("method") or "", st.small), _p(spec["spec"], st.body),
            _p(status, st.body), _p("; ".join(shown), st.small),
        ])
    flow.append(_table(rows, [width * 0.16, width * 0.26, width * 0.14, width * 0.1,
                              width * 0.34], st))

    flow.append(_p("Release decision", st.h2))
    release = data.get("release")
    if isinstance(release, dict) and release:
        for key, value in release.items():
            text = _signed(value) if isinstance(value, dict) else value
            flow.append(_p(f"{key}: {text}", st.body))
    else:
        flow.append(_p(f"Batch status: {data['status']}"
                       + (f" ({data['status_reason']})" if data.get("status_reason") else ""),
                       st.body))
    for blocker in data["release_blockers"]:
        flow.append(_p(f"Blocks release: {blocker['code']} - {blocker['message']}", st.fail))

    for table in data.get("tables", []):  # lots and equipment used, ... (registry)
        flow.append(_p(table["title"], st.h2))
        rows = [list(table["columns"])] + [
            [_p(cell, st.small) for cell in row] for row in table["rows"]
        ] if table["rows"] else [list(table["columns"]), [table["empty"]] + [""] * (
            len(table["columns"]) - 1)]
        columns = max(len(table["columns"]), 1)
        flow.append(_table(rows, [width / columns] * columns, st))

    flow.append(_p("Genealogy", st.h2))
    rows = [["Item", "Kind", "Status", "Parents", "Expires"]]
    for item in data.get("genealogy", []):
        rows.append([item["item_id"], item["kind"], item["status"],
                     ", ".join(item.get("parents", [])), _dt(item["expires_at"])])
    flow.append(_table(rows, [width * 0.16, width * 0.18, width * 0.16, width * 0.25,
                              width * 0.25], st))

    flow.append(_p("Custody trail", st.h2))
    rows = [["Time", "Item", "Action", "Site", "Location", "By"]]
    for event in data.get("custody", []):
        rows.append([_dt(event["at"]), event["item_id"], event["action"],
                     event.get("site_code") or "", _p(event.get("location") or "", st.small),
                     event.get("by") or ""])
    flow.append(_table(rows, [width * 0.2, width * 0.14, width * 0.12, width * 0.14,
                              width * 0.22, width * 0.18], st))

    if data.get("audit_head"):
        flow.append(_p("Audit trail anchor", st.h2))
        flow.append(_p(f"Head of the audit trail when this record was generated: "
                       f"{data['audit_head']}. 'gmp-mes audit verify --anchor "
                       f"{data['audit_head']}' proves that no event up to it was later "
                       "removed or rewritten.", st.small))

    generated = _dt(data.get("generated_at"))

    def _footer(canvas: Any, document: Any) -> None:
        canvas.saveState()
        canvas.setFont(st.regular, 7)
        canvas.drawString(14 * mm, 8 * mm,
                          f"gmp-mes executed batch record {data['batch_number']} - COI "
                          f"{data['coi_id']} - generated {generated}")
        canvas.drawRightString(page[0] - 14 * mm, 8 * mm, f"page {document.page}")
        canvas.restoreState()

    doc.build(flow, onFirstPage=_footer, onLaterPages=_footer)
    return buffer.getvalue()
