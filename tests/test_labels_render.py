"""Renderers: every symbol decodes with a real decoder (zxing-cpp) to exactly the payload."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime

import pypdfium2 as pdfium
import pytest
import zxingcpp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from labels import payload as lp
from labels import render

KEY = Ed25519PrivateKey.generate()
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
KINDS = {
    "final_product": "FP",
    "starting_material": "SM",
    "intermediate": "IM",
    "qc_sample": "QS",
    "retention_sample": "RS",
    "wristband": "WB",
}
STORAGE = {
    "final_product": "Store in vapour phase of liquid nitrogen ≤ -150 °C",
    "starting_material": "2-8 °C",
}


def label_data(kind: str = "final_product", **changes) -> dict:
    data = {
        "item_id": "ITM-ABCDEFGH",
        "kind": kind,
        "kind_code": KINDS[kind],
        "status": "released",
        "coi_id": "A999926000001*",
        "expires_at": datetime(2027, 3, 4, 5, 6, tzinfo=UTC),
        "patient_name": "DUPONT, Jeanne",
        "date_of_birth": date(1971, 5, 17),
        "batch_number": "B26-000123",
        "description": "Anti-CD19 CAR-T cells, 68 mL",
        "site_code": "PARIS1",
        "site_timezone": "Europe/Paris",
        "storage": STORAGE.get(kind),
        "conditional": False,
    }
    data.update(changes)
    return data


def view_of(data: dict, *, reprint: bool = False) -> render.LabelView:
    text = lp.sign(KEY, data["kind_code"], data["item_id"], data["coi_id"], data["expires_at"])
    return render.build_view(data, text, reprint=reprint, now=NOW)


def decode(image: Image.Image) -> list[str]:
    return [result.text for result in zxingcpp.read_barcodes(image)]


def texts(view: render.LabelView) -> str:
    return "\n".join(line.text for line in view.lines)


# --- content per kind ----------------------------------------------------------------------


def test_final_product_text() -> None:
    view = view_of(label_data(conditional=True))
    body = texts(view)
    assert view.title == "FINAL PRODUCT"
    for expected in (
        "FOR AUTOLOGOUS USE ONLY",
        "DUPONT, Jeanne",
        "DOB: 1971-05-17",
        "COI A9999 26 000001",
        "Product: Anti-CD19 CAR-T cells, 68 mL",
        "Batch: B26-000123",
        # One clock (issue 15): the site's local time first, UTC after it.
        "EXP: 2027-03-04 06:06 CET",
        "(2027-03-04 05:06 UTC)",
        "Store in vapour phase of liquid nitrogen ≤ -150 °C",
        "CONDITIONAL RELEASE - RESULT PENDING",
        "ITM-ABCDEFGH",
    ):
        assert expected in body, expected
    coi = next(line for line in view.lines if line.coi)
    assert coi.coi == ("A9999 26 000001", "*")  # check character printed boxed
    assert view.banner is None and not view.reprint


def test_other_kinds_have_their_own_text() -> None:
    wristband = texts(view_of(label_data("wristband", expires_at=None)))
    assert "DUPONT, Jeanne" in wristband and "DOB: 1971-05-17" in wristband
    assert "EXP" not in wristband
    starting = view_of(label_data("starting_material"))
    assert starting.title == "STARTING MATERIAL"
    assert "FOR AUTOLOGOUS USE ONLY" in texts(starting) and "2-8 °C" in texts(starting)
    for kind, title in (
        ("intermediate", "INTERMEDIATE"),
        ("qc_sample", "QC SAMPLE"),
        ("retention_sample", "RETENTION SAMPLE"),
    ):
        view = view_of(label_data(kind, patient_name=None))
        assert view.title == title
        assert "Batch: B26-000123" in texts(view) and "COI A9999 26 000001" in texts(view)
    assert "CONDITIONAL" not in texts(view_of(label_data()))


@pytest.mark.parametrize(
    ("status", "expires_at", "banner"),
    [
        ("expired", None, "EXPIRED - DO NOT USE"),
        ("rejected", None, "REJECTED - DO NOT USE"),
        ("blocked", None, "BLOCKED - QUALITY HOLD - DO NOT USE"),
        ("released", datetime(2026, 11, 23, 11, 59, tzinfo=UTC), "EXPIRED - DO NOT USE"),
        ("released", datetime(2026, 11, 23, 12, 1, tzinfo=UTC), None),
    ],
)
def test_status_banner(status, expires_at, banner) -> None:
    view = view_of(label_data(status=status, expires_at=expires_at))
    assert view.banner == banner
    if banner:
        zpl = render.render_zpl(view)
        assert banner in zpl
        assert banner in render.render_svg(view)


# --- PNG -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("reprint", [False, True])
@pytest.mark.parametrize("status", ["released", "blocked"])
def test_png_decodes_to_exactly_the_payload(kind: str, reprint: bool, status: str) -> None:
    view = view_of(label_data(kind, status=status), reprint=reprint)
    image = Image.open(io.BytesIO(render.render_png(view)))
    assert image.format == "PNG"
    assert image.size == (1200, 600)
    assert tuple(round(v) for v in image.info["dpi"]) == (300, 300)
    results = zxingcpp.read_barcodes(image)
    assert [r.text for r in results] == [view.payload]
    assert results[0].format == zxingcpp.BarcodeFormat.QRCode
    assert results[0].ec_level in ("M", "Q", "H")


def test_png_symbol_parameters() -> None:
    view = view_of(label_data())
    matrix = render.qr_matrix(view.payload)
    symbol = render.qr_image(matrix, 5)
    side = len(matrix) + 2 * render.QUIET_ZONE
    assert symbol.size == (side * 5, side * 5)
    # the quiet zone (4 modules) is white all round
    pixels = symbol.load()
    quiet = render.QUIET_ZONE * 5
    for i in range(symbol.width):
        for j in range(quiet):
            assert pixels[i, j] and pixels[j, i]
            assert pixels[i, symbol.height - 1 - j] and pixels[symbol.width - 1 - j, i]
    assert decode(symbol) == [view.payload]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(KINDS)),
    name=st.text(min_size=1, max_size=60),
    description=st.one_of(st.none(), st.text(max_size=200)),
    conditional=st.booleans(),
)
def test_png_decodes_whatever_the_text(kind, name, description, conditional) -> None:
    """Long or odd eye-readable text never disturbs the symbol nor breaks a format."""
    view = view_of(
        label_data(kind, patient_name=name, description=description, conditional=conditional)
    )
    assert decode(Image.open(io.BytesIO(render.render_png(view)))) == [view.payload]
    ET.fromstring(render.render_svg(view))  # always well-formed XML
    render.render_zpl(view).encode("utf-8")  # no lone surrogates reach the printer
    assert render.render_pdf(view).startswith(b"%PDF")


# --- SVG -------------------------------------------------------------------------------------


def _svg_matrix(svg: str) -> list[list[bool]]:
    """Rebuild the module matrix from the SVG path (the geometry the SVG really draws)."""
    root = ET.fromstring(svg)
    path = next(e for e in root.iter() if e.get("class") == "qr")
    n = int(path.get("data-modules"))
    module = float(path.get("data-module"))
    ox, oy = (float(v) for v in path.get("data-origin").split(","))
    matrix = [[False] * n for _ in range(n)]
    for x, y, w in re.findall(r"M([\d.]+) ([\d.]+)h([\d.]+)v", path.get("d")):
        col, row = round((float(x) - ox) / module), round((float(y) - oy) / module)
        for c in range(col, col + round(float(w) / module)):
            matrix[row][c] = True
    return matrix


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_svg_draws_the_same_symbol(kind: str) -> None:
    view = view_of(label_data(kind), reprint=True)
    svg = render.render_svg(view)
    root = ET.fromstring(svg)  # well-formed XML
    assert root.get("width") == "4.0in" and root.get("height") == "2.0in"
    matrix = _svg_matrix(svg)
    assert matrix == render.qr_matrix(view.payload)
    assert decode(render.qr_image(matrix, 6)) == [view.payload]
    assert "REPRINT" in svg and "A9999 26 000001" in svg


def test_svg_escapes_text() -> None:
    view = view_of(label_data(patient_name="O'BRIEN <script>&", description="a & b"))
    svg = render.render_svg(view)
    ET.fromstring(svg)
    assert "<script>" not in svg and "&lt;script&gt;" in svg


# --- PDF -------------------------------------------------------------------------------------


def _pdf_pages(data: bytes, dpi: int = 200) -> list[Image.Image]:
    document = pdfium.PdfDocument(data)
    try:
        images = []
        for index in range(len(document)):
            page = document[index]
            images.append(page.render(scale=dpi / 72).to_pil())
            page.close()
        return images
    finally:
        document.close()


@pytest.mark.parametrize("paper", ["a4", "letter"])
def test_pdf_sheet_renders_and_every_symbol_decodes(paper: str) -> None:
    views = []
    for n, kind in enumerate(sorted(KINDS) * 2):
        item = f"ITM-ABCDEF{'ABCDEFGHIJKL'[n]}{'2'}"
        views.append(
            view_of(
                label_data(kind, item_id=item, status=("blocked" if n == 3 else "released")),
                reprint=n % 2 == 0,
            )
        )
    data = render.render_pdf_sheet(views, paper)
    assert data.startswith(b"%PDF")
    document = pdfium.PdfDocument(data)
    width, height = document[0].get_size()
    document.close()
    expected = {"a4": (595.3, 841.9), "letter": (612.0, 792.0)}[paper]
    assert (round(width, 1), round(height, 1)) == expected
    pages = _pdf_pages(data)
    assert len(pages) == 2  # 12 labels, 10 per page
    found = [text for page in pages for text in decode(page)]
    assert sorted(found) == sorted(v.payload for v in views)


def test_single_label_pdf_decodes() -> None:
    view = view_of(label_data(status="rejected"))
    pages = _pdf_pages(render.render_pdf(view), dpi=300)
    assert len(pages) == 1
    assert decode(pages[0]) == [view.payload]


def test_pdf_sheet_refuses_unknown_paper() -> None:
    with pytest.raises(ValueError, match="paper"):
        render.render_pdf_sheet([view_of(label_data())], "a3")


# --- ZPL -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dpi", [203, 300])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_zpl_structure(dpi: int, kind: str) -> None:
    view = view_of(label_data(kind, patient_name="O^BRIEN~_X"), reprint=True)
    zpl = render.render_zpl(view, dpi=dpi, copies=3)
    lines = zpl.strip().splitlines()
    assert lines[0] == "^XA" and lines[-1] == "^XZ"
    assert zpl.count("^XA") == 1 and zpl.count("^XZ") == 1
    # The default stock is 4 x 2 inch (issue 15: 2 x 1 inch text was unreadable).
    width, height = (812, 406) if dpi == 203 else (1200, 600)
    assert f"^PW{width}" in zpl and f"^LL{height}" in zpl
    assert "^PQ3," in zpl
    qr = [line for line in lines if "^BQ" in line]
    assert len(qr) == 1
    match = re.fullmatch(r"\^FO(\d+),(\d+)\^BQN,2,(\d+)\^FDMA,(.+)\^FS", qr[0])
    assert match, qr[0]
    x, y, mag, data = int(match[1]), int(match[2]), int(match[3]), match[4]
    assert data == view.payload  # the printer encodes exactly the signed payload
    modules = len(render.qr_matrix(view.payload))
    assert x >= 4 * mag and y >= 4 * mag  # quiet zone left and top
    assert y + (modules + 4) * mag <= height  # symbol and quiet zone fit the label
    assert mag >= 3  # >= 0.33 mm modules at 203 and 300 dpi
    # every field origin lies on the label; field data never carries raw ^ or ~
    for fx, fy in re.findall(r"\^FO(\d+),(\d+)", zpl):
        assert int(fx) < width and int(fy) < height
    for field in re.findall(r"\^FD(.*?)\^FS", zpl):
        assert "~" not in field
    assert (
        "O_5EBRIEN_7E_5FX" in zpl
        if kind in ("final_product", "wristband", "starting_material")
        else True
    )
    assert "REPRINT" in zpl


def test_zpl_refuses_other_resolutions() -> None:
    with pytest.raises(ValueError, match="203 or 300"):
        render.render_zpl(view_of(label_data()), dpi=600)


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(alphabet=st.sampled_from("^~_AZaz09 ,-éß✓\\\x1e\n"), min_size=1, max_size=40),
    description=st.text(max_size=80),
    dpi=st.sampled_from([203, 300]),
)
def test_zpl_text_can_never_inject_commands(name: str, description: str, dpi: int) -> None:
    """Patient names and descriptions are data: ^ and ~ never reach the printer raw."""
    view = view_of(label_data(patient_name=name, description=description, conditional=True))
    zpl = render.render_zpl(view, dpi=dpi)
    lines = zpl.strip().splitlines()
    assert lines[0] == "^XA" and lines[-1] == "^XZ" and zpl.count("^XZ") == 1
    for line in lines[1:-1]:
        if "^FD" not in line:
            continue
        _, _, data = line.partition("^FD")
        assert data.endswith("^FS")
        data = data[: -len("^FS")]
        assert "^" not in data and "~" not in data, line
    assert zpl.count("~") == 0
