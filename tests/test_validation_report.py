"""Requirements catalogue and traceability matrix (SPEC §17, issue 22).

The matrix is only evidence if it is built from a real run: a planted test suite runs
in a subprocess with the plugin that writes requirement markers into the JUnit XML, one
test passing and one failing, and the report must list each under its clause with the
outcome it really had.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from validation import report
from validation.cli import validate_report
from validation.requirements import (
    UnknownClause,
    load_catalogue,
    markers_in,
    normalise,
)

TESTS = Path(__file__).parent
ARTIFACTS = TESTS / "artifacts"

PLANTED = '''
import pytest

@pytest.mark.requirement("21 CFR 11.10(a)")
def test_planted_pass():
    assert 1 + 1 == 2

@pytest.mark.requirement("Annex 11 §7")
def test_planted_fail():
    assert 1 + 1 == 3

@pytest.mark.requirement("21 CFR 99.99")
def test_planted_unknown_clause():
    pass

@pytest.mark.requirement("EU GMP Annex 11 §12.4")
def test_planted_subclause():
    pass
'''


@pytest.mark.requirement("EU GMP Annex 11 §4")
@pytest.mark.requirement("21 CFR 11.10(a)")
def test_every_marker_in_the_suite_names_a_catalogue_clause(
        request: pytest.FixtureRequest) -> None:
    # tests/conftest.py loads the plugin: this very test's markers go into the JUnit XML.
    assert ("requirement", "21 CFR 11.10(a)") in request.node.user_properties
    catalogue = load_catalogue()
    uses = markers_in(TESTS)
    assert len(uses) > 50  # the scan finds the suite's markers (decorators and pytestmark)
    unknown = []
    for use in uses:
        try:
            catalogue.resolve(use.marker)
        except UnknownClause:
            unknown.append(f"{use.path.name}:{use.line} {use.test}: {use.marker!r}")
    assert not unknown, "requirement markers not in config/requirements.toml:\n" + "\n".join(
        unknown)


def test_the_catalogue_covers_what_the_validation_pack_promises() -> None:
    ids = load_catalogue().ids
    for letter in "abcdefghijk":
        assert f"21 CFR 11.10({letter})" in ids
    for clause in ("21 CFR 11.50", "21 CFR 11.70", "21 CFR 11.100", "21 CFR 11.200",
                   "21 CFR 11.300"):
        assert clause in ids
    for section in range(4, 18):
        assert f"EU GMP Annex 11 §{section}" in ids
    assert any(i.startswith("EU GMP Part IV") for i in ids)


def test_marker_spellings_are_normalised_and_unknown_ones_refused() -> None:
    catalogue = load_catalogue()
    assert normalise("Annex 11  §  9") == "EU GMP Annex 11 §9"
    assert normalise("Part 11 §11.10(e)") == "21 CFR 11.10(e)"
    assert normalise("21 CFR 11.10 (E)") == "21 CFR 11.10(e)"
    assert catalogue.resolve("SPEC §5, §6, §7") == ["SPEC §5", "SPEC §6", "SPEC §7"]
    assert catalogue.resolve("SPEC §5 (result after release)") == ["SPEC §5"]
    assert catalogue.resolve("EU GMP Annex 11 §12.4") == ["EU GMP Annex 11 §12.4"]
    for wrong in ("21 CFR 11.10(z)", "EU GMP Annex 11 §12.9", "Annex 11 §99", "21 CFR 11"):
        with pytest.raises(UnknownClause):
            catalogue.resolve(wrong)


def test_a_marker_the_catalogue_lacks_is_found_in_source(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text(
        "import pytest\npytestmark = pytest.mark.requirement('21 CFR 11.10(q)')\n"
        "class TestA:\n    @pytest.mark.requirement('Annex 11 §9')\n"
        "    def test_b(self):\n        pass\n")
    uses = {(u.test, u.marker) for u in markers_in(tmp_path)}
    assert uses == {("<module>", "21 CFR 11.10(q)"), ("test_b", "Annex 11 §9")}
    catalogue = load_catalogue()
    with pytest.raises(UnknownClause):
        catalogue.resolve("21 CFR 11.10(q)")


def _run_planted(tmp_path: Path) -> Path:
    suite = tmp_path / "planted"
    suite.mkdir()
    (suite / "test_planted.py").write_text(PLANTED)
    results = tmp_path / "results.xml"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "validation.pytest_plugin",
         "-p", "no:cacheprovider", "-o", "addopts=", "-W", "default",
         f"--rootdir={suite}", f"--junitxml={results}", str(suite)],
        cwd=suite, capture_output=True, text=True, check=False, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr  # one planted test fails
    return results


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run_planted(tmp_path_factory.mktemp("planted"))


@pytest.mark.requirement("EU GMP Annex 11 §4")
@pytest.mark.requirement("21 CFR 11.10(a)")
def test_the_junit_xml_carries_each_tests_markers(planted: Path) -> None:
    cases = {c.get("name"): [p.get("value") for p in c.iter("property")
                             if p.get("name") == "requirement"]
             for c in ET.parse(planted).getroot().iter("testcase")}
    assert cases["test_planted_pass"] == ["21 CFR 11.10(a)"]
    assert cases["test_planted_fail"] == ["Annex 11 §7"]


@pytest.mark.requirement("EU GMP Annex 11 §4")
@pytest.mark.requirement("21 CFR 11.10(a)")
def test_the_matrix_lists_planted_tests_with_their_real_outcome(planted: Path) -> None:
    results = report.parse_results(planted)
    matrix = report.build_matrix(load_catalogue(), results, report.report_meta(planted))
    rows = {row.clause: row for row in matrix.rows}

    passing = rows["21 CFR 11.10(a)"]
    assert [(t.id.split("::")[-1], t.outcome) for t in passing.direct] == [
        ("test_planted_pass", "passed")]
    assert passing.status == "passed"
    failing = rows["EU GMP Annex 11 §7"]  # written "Annex 11 §7": normalised
    assert [(t.id.split("::")[-1], t.outcome) for t in failing.direct] == [
        ("test_planted_fail", "failed")]
    assert failing.status == "failed"
    # A sub-clause's evidence rolls up to its parent clause.
    assert rows["EU GMP Annex 11 §12.4"].status == "passed"
    assert rows["EU GMP Annex 11 §12"].status == "passed"
    assert not rows["EU GMP Annex 11 §12"].direct
    # The unknown clause is flagged, and clauses nobody tested are gaps.
    assert [(t.id.split("::")[-1], m) for t, m in matrix.unknown] == [
        ("test_planted_unknown_clause", "21 CFR 99.99")]
    assert rows["21 CFR 11.10(k)"].status == "gap"
    assert rows["21 CFR 11.10(k)"] in matrix.gaps
    assert matrix.totals() == {"passed": 3, "skipped": 0, "failed": 1, "error": 0}
    assert matrix.meta["results_sha256"] == report.sha256_file(planted)


@pytest.mark.requirement("EU GMP Annex 11 §4")
@pytest.mark.requirement("EU GMP Annex 11 §8")
def test_report_command_writes_html_pdf_and_json(planted: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(validate_report, ["--results", str(planted), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "unknown clause '21 CFR 99.99'" in result.output
    html = (out / "traceability.html").read_text()
    row = re.search(r'<tr data-clause="EU GMP Annex 11 §7".*?</tr>', html, re.S)
    assert row and "test_planted_fail" in row.group(0) and 'class="failed"' in row.group(0)
    assert 'id="unknown"' in html and "21 CFR 99.99" in html
    assert report.sha256_file(planted) in html

    pdf = (out / "traceability.pdf").read_bytes()
    document = pdfium.PdfDocument(pdf)
    try:
        text = "\n".join(page.get_textpage().get_text_range() for page in document)
        flat = re.sub(r"\s+", " ", text)
        assert "EU GMP Annex 11 §7" in flat and "FAILED" in flat
        assert "GAP: no evidence" in flat and "21 CFR 99.99" in flat
        assert report.sha256_file(planted)[:32] in flat.replace(" ", "")
        # Rendered as a reviewer sees it: a real, non-blank page.
        image = document[0].render(scale=1.5).to_pil()
    finally:
        document.close()
    ARTIFACTS.mkdir(exist_ok=True)
    image.save(ARTIFACTS / "validation_report_page1.png")
    assert image.width > image.height  # landscape A4
    grey = image.convert("L")
    dark = sum(grey.histogram()[:128])
    assert dark > 0.005 * grey.width * grey.height  # text and grid lines were drawn
    red = image.convert("RGB").getcolors(1 << 20)
    assert red and any(r > 150 and g < 80 and b < 80 for _, (r, g, b) in red)  # the FAILED


def test_report_refuses_a_file_that_is_not_junit(tmp_path: Path) -> None:
    bad = tmp_path / "results.xml"
    bad.write_text("<html></html>")
    result = CliRunner().invoke(validate_report, ["--results", str(bad), "--out",
                                                  str(tmp_path / "o")])
    assert result.exit_code == 1 and "not JUnit XML" in result.output


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("Annex 1§()abcdeCFR.:,Part IVSPEC 0123456789\t"),
               max_size=40))
def test_normalising_is_idempotent(marker: str) -> None:
    once = normalise(marker)
    assert normalise(once) == once


_CATALOGUE = load_catalogue()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(_CATALOGUE.ids)), st.sampled_from([" ", "  ", "\t", "\u00a0"]),
       st.sampled_from(["", " : a note", " (what the test shows)"]))
def test_every_clause_resolves_to_itself_whatever_its_spacing(clause: str, space: str,
                                                              note: str) -> None:
    spaced = clause.replace(" ", space)
    assert _CATALOGUE.resolve(spaced + note) == [clause]
