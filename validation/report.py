"""The traceability matrix (OQ report) built from one test run's JUnit XML.

EU GMP Annex 11 §4.4 and GAMP 5: each requirement traces to the tests that show it and to
their result. Every clause of the catalogue is listed; a clause with no test that ran is
a gap; a marker naming no listed clause is flagged. The report names what it was built
from (versions, commit, date, SHA-256 of the results file), so a reviewer can tie it to
the run. Nothing here runs a test: the clauses come from the ``requirement`` properties
that ``validation.pytest_plugin`` writes into the XML.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from validation.requirements import Catalogue, UnknownClause

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gmp-mes", "flask", "sqlalchemy", "alembic", "psycopg", "cryptography",
            "reportlab", "pytest")
# Worst first: the outcome a test case shows when several elements are present.
OUTCOME_ORDER = ("error", "failed", "skipped", "passed")


class ResultsError(ValueError):
    """The results file is not JUnit XML this report can read (one line)."""


@dataclass(frozen=True)
class TestResult:
    id: str
    outcome: str
    message: str
    markers: tuple[str, ...]


@dataclass
class Row:
    clause: str
    title: str
    text: str
    document: str
    parent: str | None
    evidence: list[tuple[TestResult, str]] = field(default_factory=list)  # (test, via clause)

    @property
    def status(self) -> str:
        outcomes = {test.outcome for test, _ in self.evidence}
        if outcomes & {"failed", "error"}:
            return "failed"
        if "passed" in outcomes:
            return "passed"
        return "gap"

    @property
    def direct(self) -> list[TestResult]:
        """Tests naming this very clause (those naming a sub-clause are listed there)."""
        return [test for test, via in self.evidence if via == self.clause]

    def counts(self) -> dict[str, int]:
        return dict(Counter(test.outcome for test, _ in self.evidence))


@dataclass
class Matrix:
    rows: list[Row]
    unknown: list[tuple[TestResult, str]]  # (test, marker not in the catalogue)
    results: list[TestResult]
    meta: dict[str, Any]

    @property
    def gaps(self) -> list[Row]:
        return [row for row in self.rows if row.status == "gap"]

    def totals(self) -> dict[str, int]:
        counts = Counter(result.outcome for result in self.results)
        return {outcome: counts.get(outcome, 0) for outcome in reversed(OUTCOME_ORDER)}

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "totals": self.totals(),
            "clauses": [
                {"clause": r.clause, "title": r.title, "status": r.status,
                 "parent": r.parent,
                 "tests": [{"test": t.id, "outcome": t.outcome, "via": via}
                           for t, via in r.evidence]}
                for r in self.rows
            ],
            "gaps": [r.clause for r in self.gaps],
            "unknown_clauses": [{"test": t.id, "marker": m} for t, m in self.unknown],
        }


def count_cases(path: Path) -> int:
    try:
        return sum(1 for _, node in ET.iterparse(path) if node.tag == "testcase")
    except (OSError, ET.ParseError) as exc:
        raise ResultsError(f"{path}: not readable JUnit XML ({exc})") from exc


def parse_results(path: Path, progress: Callable[[int], None] | None = None) -> list[TestResult]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ResultsError(f"{path}: not readable JUnit XML ({exc})") from exc
    cases = list(root.iter("testcase"))
    if root.tag not in ("testsuites", "testsuite"):
        raise ResultsError(f"{path}: not JUnit XML (root element <{root.tag}>)")
    results = []
    for case in cases:
        outcome, message = "passed", ""
        for tag, name in (("error", "error"), ("failure", "failed"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None and OUTCOME_ORDER.index(name) < OUTCOME_ORDER.index(outcome):
                outcome, message = name, (node.get("message") or "")[:300]
        markers = tuple(
            prop.get("value", "") for prop in case.iter("property")
            if prop.get("name") == "requirement"
        )
        classname, name = case.get("classname", ""), case.get("name", "")
        results.append(TestResult(f"{classname}::{name}" if classname else name,
                                  outcome, message, markers))
        if progress is not None:
            progress(1)
    return results


def build_matrix(catalogue: Catalogue, results: list[TestResult],
                 meta: dict[str, Any]) -> Matrix:
    rows = {c.id: Row(c.id, c.title, c.text, c.document, catalogue.parent(c.id))
            for c in catalogue.clauses}
    unknown: list[tuple[TestResult, str]] = []
    for result in results:
        for marker in result.markers:
            try:
                clauses = catalogue.resolve(marker)
            except UnknownClause:
                unknown.append((result, marker))
                continue
            for clause in clauses:
                # The test is evidence for its clause and, rolled up, for every parent.
                current: str | None = clause
                while current is not None:
                    row = rows[current]
                    if all(t is not result for t, _ in row.evidence):
                        row.evidence.append((result, clause))
                    current = row.parent
    return Matrix(list(rows.values()), unknown, results, meta)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """The commit the code was at, with "+changes" when the work tree differs from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, check=True,
                               timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + (" +changes" if dirty else "")


def report_meta(results_path: Path, generated_at: datetime | None = None) -> dict[str, Any]:
    return {
        "title": "gmp-mes traceability matrix (operational qualification)",
        "generated_at": (generated_at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(),
        "results_file": results_path.name,
        "results_sha256": sha256_file(results_path),
        "versions": versions(),
    }


# --- rendering --------------------------------------------------------------------------

def render_html(matrix: Matrix) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("validation", "templates"),
                      autoescape=select_autoescape(["html"]))
    return env.get_template("validation/report.html").render(m=matrix)


def _fonts() -> tuple[str, str]:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    name = "ValidationSans"
    if name in pdfmetrics.getRegisteredFontNames():
        return name, f"{name}-Bold"
    import reportlab

    bundled = Path(reportlab.__file__).parent / "fonts"
    for regular, bold in (
        (Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
         Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")),
        (bundled / "Vera.ttf", bundled / "VeraBd.ttf"),
    ):
        if regular.exists() and bold.exists():
            pdfmetrics.registerFont(TTFont(name, str(regular)))
            pdfmetrics.registerFont(TTFont(f"{name}-Bold", str(bold)))
            pdfmetrics.registerFontFamily(name, normal=name, bold=f"{name}-Bold", italic=name,
                                          boldItalic=f"{name}-Bold")
            return name, f"{name}-Bold"
    return "Helvetica", "Helvetica-Bold"


STATUS_COLOURS = {"passed": "#1e7b34", "failed": "#b3261e", "gap": "#8a5a00"}


def render_pdf(matrix: Matrix) -> bytes:
    import io
    from html import escape

    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Table, TableStyle

    regular, bold = _fonts()
    body = ParagraphStyle("body", fontName=regular, fontSize=8, leading=10)
    small = ParagraphStyle("small", parent=body, fontSize=6.5, leading=8)
    head = ParagraphStyle("head", parent=body, fontName=bold, fontSize=15, leading=19,
                          spaceAfter=4)
    h2 = ParagraphStyle("h2", parent=body, fontName=bold, fontSize=11, leading=14,
                        spaceBefore=8, spaceAfter=4)
    meta = matrix.meta
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=landscape(A4), leftMargin=12 * mm,
                            rightMargin=12 * mm, topMargin=12 * mm, bottomMargin=14 * mm,
                            title=meta["title"], author="gmp-mes validate report")
    width = doc.width

    def p(text: Any, style: ParagraphStyle = body) -> Paragraph:
        return Paragraph(escape(str(text)), style)

    def grid(rows: list[list[Any]], widths: list[float], header: bool = True) -> Table:
        table = Table(rows, colWidths=widths, repeatRows=1 if header else 0)
        style = [("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#9aa4ad")),
                 ("VALIGN", (0, 0), (-1, -1), "TOP"),
                 ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3)]
        if header:
            style.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e3e8ec")))
        table.setStyle(TableStyle(style))
        return table

    totals = matrix.totals()
    story: list[Any] = [p(meta["title"], head)]
    info = [
        ["Generated (UTC)", meta["generated_at"], "Commit", meta["commit"]],
        ["Results file", meta["results_file"], "SHA-256", meta["results_sha256"]],
        ["Tests", ", ".join(f"{v} {k}" for k, v in totals.items()),
         "Clauses", f"{len(matrix.rows)} listed, {len(matrix.gaps)} without evidence, "
                    f"{len(matrix.unknown)} unknown marker(s)"],
        ["Versions", ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), "", ""],
    ]
    story.append(grid([[p(c, small) for c in row] for row in info],
                      [28 * mm, width / 2 - 28 * mm, 20 * mm, width / 2 - 20 * mm],
                      header=False))
    failed = [row.clause for row in matrix.rows if row.status == "failed"]
    summary = (f'<font color="{STATUS_COLOURS["failed"]}"><b>FAILED clauses: '
               f'{escape(", ".join(failed))}</b></font>' if failed
               else f'<font color="{STATUS_COLOURS["passed"]}"><b>No clause failed.</b></font>')
    if matrix.unknown:
        summary += (f' <font color="{STATUS_COLOURS["failed"]}"><b>Unknown clauses: '
                    f'{escape(", ".join(sorted({m for _, m in matrix.unknown})))}</b></font>')
    summary += f" {len(matrix.gaps)} clause(s) without evidence (gaps) are listed in the matrix."
    story.append(Paragraph(summary, ParagraphStyle("summary", parent=body, fontSize=9,
                                                   leading=12, spaceBefore=6)))
    story.append(p("Matrix", h2))
    rows = [[p("Clause"), p("Requirement (summary)"), p("Tests"), p("Result")]]
    for row in matrix.rows:
        counts = row.counts()
        colour = STATUS_COLOURS[row.status]
        label = {"passed": "evidence: passed", "failed": "FAILED", "gap": "GAP: no evidence"}
        rows.append([
            Paragraph(("&nbsp;&nbsp;&nbsp;" if row.parent else "") + escape(row.clause), body),
            Paragraph(f"<b>{escape(row.title)}</b>: {escape(row.text)}", small),
            p(", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none", small),
            Paragraph(f'<font color="{colour}"><b>{label[row.status]}</b></font>', body),
        ])
    story.append(grid(rows, [38 * mm, width - 38 * mm - 34 * mm - 34 * mm, 34 * mm, 34 * mm]))
    if matrix.unknown:
        story.append(p("Markers naming no clause of the catalogue", h2))
        story.append(grid([[p("Test"), p("Marker")]]
                          + [[p(t.id, small), p(m, small)] for t, m in matrix.unknown],
                          [width * 0.7, width * 0.3]))
    story.append(p("Evidence per clause", h2))
    detail = [[p("Clause"), p("Test"), p("Outcome")]]
    for row in matrix.rows:
        direct = row.direct
        for test in direct:
            detail.append([p(row.clause, small), p(test.id, small),
                           p(test.outcome + (f": {test.message}" if test.message else ""),
                             small)])
        if not row.evidence:
            detail.append([p(row.clause, small), p("no test", small), p("gap", small)])
        elif not direct:
            detail.append([p(row.clause, small), p("see its sub-clauses", small), p("", small)])
    story.append(grid(detail, [38 * mm, width * 0.62, width - 38 * mm - width * 0.62]))

    def footer(canvas: Any, document: Any) -> None:
        canvas.saveState()
        canvas.setFont(regular, 7)
        canvas.drawString(12 * mm, 8 * mm, f"gmp-mes traceability matrix  ·  results SHA-256 "
                                           f"{meta['results_sha256']}  ·  page {document.page}")
        canvas.restoreState()

    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()


OUTPUTS: dict[str, Callable[[Matrix], bytes]] = {
    "traceability.html": lambda m: render_html(m).encode("utf-8"),
    "traceability.pdf": lambda m: render_pdf(m),
    "traceability.json": lambda m: (json.dumps(m.to_json(), indent=2, ensure_ascii=False)
                                    + "\n").encode("utf-8"),
}


def write_report(matrix: Matrix, out_dir: Path,
                 progress: Callable[[int], None] | None = None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, render in OUTPUTS.items():
        path = out_dir / name
        path.write_bytes(render(matrix))
        written.append(path)
        if progress is not None:
            progress(1)
    return written
