# ruff: noqa: F811  (pytest fixtures imported from tests.test_labels_print)
"""Labels people can print (issue 15): stock sizes per site and kind, a minimum text
size checked from the layout at 300 dpi, previews that record nothing and never verify,
PDF inline for the print dialog, and ZPL sent to a networked printer over raw TCP."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator

import pytest
import zxingcpp
from PIL import Image

from labels import render
from tests.helpers import assert_problem, audit_events, count
from tests.test_labels_print import (  # noqa: F401
    check,
    make_item,
    operator,
    patient,
)
from tests.test_labels_render import KINDS, NOW, label_data, view_of

MIN_PX_300 = render.MIN_TEXT_MM / 25.4 * 300  # 2 mm at 300 dpi: 23.6 pixels


def _longest_final_product() -> dict:
    """A final-product label with everything it can carry (conditional, long names)."""
    return label_data(
        patient_name="MONTGOMERY-FITZWILLIAM, Anne-Catherine",
        description="Anti-CD19 CAR-T cells (tisagenlecleucel), 68 mL",
        conditional=True, status="expired")


@pytest.mark.requirement("SPEC §4")
@pytest.mark.parametrize(("stock", "longest"), [("4x2", True), ("4x2", False), ("3x2", False)])
@pytest.mark.parametrize("reprint", [False, True])
def test_final_product_text_is_at_least_2_mm_at_300_dpi(stock: str, longest: bool,
                                                         reprint: bool) -> None:
    """The default 4 x 2 inch final-product label carries even the longest content
    with text of at least 2 mm; 3 x 2 inch carries the usual content."""
    data = _longest_final_product() if longest else label_data(conditional=True)
    from labels import payload as lp
    from tests.test_labels_render import KEY

    text = lp.sign(KEY, "FP", data["item_id"], data["coi_id"], data["expires_at"], 9999)
    view = render.build_view(data, text, reprint=reprint, now=NOW, serial=9999, stock=stock)
    plan = render.png_plan(view, dpi=300)
    # Measured from the layout: every size the label is drawn with.
    assert min(plan.text_sizes()) >= MIN_PX_300, plan.text_sizes()
    assert plan.layout.fits
    assert (plan.width, plan.height) == tuple(int(v * 300) for v in render.STOCKS[stock])
    # Every row of text lies on the label.
    rows = len(plan.layout.rows)
    assert plan.text_top + rows * int(plan.layout.size * plan.layout.leading) <= plan.height
    png = render.render_png(view, dpi=300)
    image = Image.open(io.BytesIO(png))
    assert image.size == (plan.width, plan.height)
    assert [r.text for r in zxingcpp.read_barcodes(image)] == [text]


@pytest.mark.parametrize("stock", sorted(render.STOCKS))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_label_that_fits_decodes_and_keeps_the_minimum(kind: str, stock: str) -> None:
    view = view_of(label_data(kind))
    view = render.LabelView(**{**view.__dict__, "stock": stock})
    try:
        plan = render.png_plan(view)
    except render.LabelDoesNotFit:
        assert stock == "2x1"  # only the smallest stock can be too small
        return
    assert min(plan.text_sizes()) >= MIN_PX_300
    image = Image.open(io.BytesIO(render.render_png(view)))
    assert [r.text for r in zxingcpp.read_barcodes(image)] == [view.payload]
    zpl = render.render_zpl(view, dpi=203)
    sizes = [int(h) for h in __import__("re").findall(r"\^A0N,(\d+),", zpl)]
    assert min(sizes) >= render.MIN_TEXT_MM / 25.4 * 203


def test_a_final_product_does_not_fit_2x1_and_is_not_printed_small() -> None:
    view = render.LabelView(**{**view_of(label_data()).__dict__, "stock": "2x1"})
    with pytest.raises(render.LabelDoesNotFit, match="larger stock"):
        render.check_fit(view)


# --- per site stock, preview, inline PDF ---------------------------------------------------


def _put(api, path: str, json: dict):
    return api.client.put(path, json=json, headers=api._headers(None))


def test_site_chooses_the_stock_per_kind(db, operator, make_item, make_user, login) -> None:
    admin = login(make_user("adam", "admin"))
    item_id = make_item()
    assert admin.get("/api/v1/sites/CLEAN1/labels").get_json()["stocks"]["final_product"] == "4x2"
    assert_problem(_put(operator, "/api/v1/sites/CLEAN1/labels/stocks/final_product",
                                json={"stock": "3x2"}), 403, "forbidden_role")
    assert_problem(_put(admin, "/api/v1/sites/CLEAN1/labels/stocks/final_product",
                             json={"stock": "5x5"}), 422)
    assert_problem(_put(admin, "/api/v1/sites/CLEAN1/labels/stocks/bogus",
                             json={"stock": "3x2"}), 422)
    set_ = _put(admin, "/api/v1/sites/CLEAN1/labels/stocks/final_product", json={"stock": "3x2"})
    assert set_.status_code == 200 and set_.get_json()["stocks"]["final_product"] == "3x2"
    assert audit_events(db, entity_type="label_stock")
    png = operator.get(f"/api/v1/items/{item_id}/label?format=png")
    assert Image.open(io.BytesIO(png.data)).size == (900, 600)
    _put(admin, "/api/v1/sites/CLEAN1/labels/stocks/final_product", json={"stock": "2x1"})
    before = count(db, "label_print")
    refused = operator.get(f"/api/v1/items/{item_id}/label?format=pdf&reprint=true&reason=x")
    assert_problem(refused, 409, "label_does_not_fit")
    assert count(db, "label_print") == before  # nothing recorded


@pytest.mark.requirement("EU GMP Annex 11 §12.4")
def test_preview_records_nothing_never_verifies_and_the_first_print_needs_no_reason(
        db, operator, make_item) -> None:
    item_id = make_item()
    events = len(audit_events(db))
    preview = operator.get(f"/api/v1/items/{item_id}/label?format=png&preview=true")
    assert preview.status_code == 200 and preview.mimetype == "image/png"
    (code,) = [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(preview.data)))]
    assert code.startswith("PREVIEW:") and not check(db, code).ok
    assert check(db, code).reasons[0][0] == "malformed"
    assert "preview" in check(db, code).reasons[0][1]
    assert count(db, "label_print") == 0 and len(audit_events(db)) == events
    pdf = operator.get(f"/api/v1/items/{item_id}/label?format=pdf&preview=true")
    assert pdf.headers["Content-Disposition"].startswith("inline")
    first = operator.get(f"/api/v1/items/{item_id}/label?format=pdf")  # no reprint, no reason
    assert first.status_code == 200, first.get_data(as_text=True)
    assert first.headers["Content-Disposition"].startswith("inline")  # the print dialog
    assert count(db, "label_print") == 1


def test_scanning_a_preview_is_a_stop(app, db, operator, make_item) -> None:
    item_id = make_item()
    preview = operator.get(f"/api/v1/items/{item_id}/label?format=png&preview=true")
    (code,) = [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(preview.data)))]
    body = operator.post("/api/v1/scans", json={"payload": code, "workstation": "WS-1"}).get_json()
    assert body["ok"] is False and body["reasons"][0]["code"] == "malformed"
    assert count(db, "alert") == 0  # a preview is no forgery


# --- networked printer -------------------------------------------------------------------


class Listener:
    """A printer stand-in on 127.0.0.1: accepts one job, reads it to EOF, closes."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.jobs: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.server.settimeout(20)
        try:
            connection, _ = self.server.accept()
        except OSError:
            return
        with connection:
            chunks = []
            while data := connection.recv(65536):
                chunks.append(data)
            self.jobs.append(b"".join(chunks))

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=5)


@pytest.fixture
def listener() -> Iterator[Listener]:
    printer = Listener()
    yield printer
    printer.close()


def _closed_port() -> int:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


@pytest.mark.requirement("EU GMP Annex 11 §12.4")
def test_zpl_sent_to_a_networked_printer_arrives_whole_and_is_recorded(
        db, operator, make_item, make_user, login, listener) -> None:
    admin = login(make_user("adam", "admin"))
    added = admin.post("/api/v1/sites/CLEAN1/labels/printers",
                       json={"name": "ZT411-bench", "host": "127.0.0.1",
                             "port": listener.port, "dpi": 300})
    assert added.status_code == 201, added.get_json()
    item_id = make_item()
    response = operator.post(f"/api/v1/items/{item_id}/label/print",
                             json={"printer": "ZT411-bench", "copies": 2})
    assert response.status_code == 201, response.get_json()
    listener.thread.join(timeout=10)
    (job,) = listener.jobs
    text = job.decode("utf-8")
    assert text.startswith("^XA") and text.rstrip().endswith("^XZ")
    assert text.count("^XA") == text.count("^XZ") == 2  # two copies, each whole
    assert "^PW1200" in text  # 4 x 2 inch at the printer's 300 dpi
    labels = operator.get(f"/api/v1/items/{item_id}/labels").get_json()
    assert len(labels) == 2 and {lbl["format"] for lbl in labels} == {"zpl"}
    assert sorted(response.get_json()["label_ids"]) == sorted(lbl["label_id"] for lbl in labels)


def test_a_refused_connection_records_no_print_and_says_so(
        db, operator, make_item, make_user, login) -> None:
    admin = login(make_user("adam", "admin"))
    admin.post("/api/v1/sites/CLEAN1/labels/printers",
               json={"name": "gone", "host": "127.0.0.1", "port": _closed_port()})
    item_id = make_item()
    before = len(audit_events(db, entity_type="label"))
    body = assert_problem(operator.post(f"/api/v1/items/{item_id}/label/print",
                                        json={"printer": "gone"}), 409, "printer_unreachable")
    assert "no print was recorded" in body["detail"]
    assert count(db, "label_print") == 0
    assert len(audit_events(db, entity_type="label")) == before
    # The first real print afterwards is still the original (no reason needed).
    assert operator.get(f"/api/v1/items/{item_id}/label?format=pdf").status_code == 200


def test_printer_configuration_is_validated(make_user, login) -> None:
    admin = login(make_user("adam", "admin"))
    for body in ({"name": "", "host": "h"}, {"name": "a", "host": "h", "port": 0},
                 {"name": "a", "host": "h", "dpi": 600}, {"name": "a"}):
        assert_problem(admin.post("/api/v1/sites/CLEAN1/labels/printers", json=body), 422)
    assert_problem(admin.post("/api/v1/sites/NOPE/labels/printers",
                              json={"name": "a", "host": "h"}), 404)
    ok = admin.post("/api/v1/sites/CLEAN1/labels/printers", json={"name": "a", "host": "h"})
    assert ok.status_code == 201
    assert_problem(admin.post("/api/v1/sites/CLEAN1/labels/printers",
                              json={"name": "a", "host": "h"}), 409)


def test_item_page_sends_to_the_site_printer_then_redirects(
        app, client, db, make_item, make_user, login, listener) -> None:
    from tests.test_identity_pages import Browser

    admin = login(make_user("adam", "admin"))
    admin.post("/api/v1/sites/CLEAN1/labels/printers",
               json={"name": "bench", "host": "127.0.0.1", "port": listener.port})
    admin.post("/api/v1/sites/CLEAN1/labels/printers",
               json={"name": "gone", "host": "127.0.0.1", "port": _closed_port()})
    item_id = make_item()
    browser = Browser(app.test_client(), make_user("olga", "operator"))
    page = browser.get(f"/items/{item_id}").get_data(as_text=True)
    assert "Print on label printer" in page and "bench (203 dpi)" in page
    refused = browser.post(f"/items/{item_id}/labels/send", {"printer": "gone"})
    assert refused.status_code == 302
    shown = browser.get(f"/items/{item_id}").get_data(as_text=True)
    assert "no print was recorded" in shown and count(db, "label_print") == 0
    sent = browser.post(f"/items/{item_id}/labels/send", {"printer": "bench"})
    assert sent.status_code == 302 and sent.headers["Location"].endswith("#labels")
    listener.thread.join(timeout=10)
    assert listener.jobs and listener.jobs[0].startswith(b"^XA")
    after = browser.get(f"/items/{item_id}").get_data(as_text=True)
    # Copy 1 was the refused job's serial: never given again (it may exist on paper).
    assert "Label sent to printer bench: copy 2 recorded." in after
    assert count(db, "label_print") == 1


def test_admin_sets_stock_and_printers_on_the_setup_page(app, client, db, make_user,
                                                         make_item) -> None:
    from tests.test_identity_pages import Browser

    make_item()
    admin = Browser(client, make_user("adam", "admin"))
    page = admin.get("/labels/setup?site=CLEAN1").get_data(as_text=True)
    assert "Stock per kind of label" in page and "final product" in page
    saved = admin.post("/labels/setup", {"site": "CLEAN1", "what": "stock",
                                         "kind": "final_product", "stock": "3x2"})
    assert saved.status_code == 302
    with db.transaction() as s:
        from labels import services

        assert services.stock_for(s, "CLEAN1", "final_product") == "3x2"
    bad = admin.post("/labels/setup", {"site": "CLEAN1", "what": "printer", "name": "",
                                       "host": "10.0.0.5", "port": "9100", "dpi": "203"})
    assert bad.status_code == 422 and 'value="10.0.0.5"' in bad.get_data(as_text=True)
    added = admin.post("/labels/setup", {"site": "CLEAN1", "what": "printer",
                                         "name": "ZT411", "host": "10.0.0.5", "port": "9100",
                                         "dpi": "300"})
    assert added.status_code == 302
    shown = admin.get("/labels/setup?site=CLEAN1").get_data(as_text=True)
    assert "10.0.0.5:9100" in shown and "300 dpi" in shown
    operator = Browser(app.test_client(), make_user("olga", "operator"))
    assert operator.get("/labels/setup").status_code == 403
