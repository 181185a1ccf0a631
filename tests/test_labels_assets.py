"""Labels of material lots (LOT) and equipment (EQP), SPEC §11: signed payloads with COI
field ``-``, print control as for items (original, reprint with a reason, preview), every
format, the online check (a copy not recorded is ``unknown_copy``). The subject is an
``AssetLabel`` built here: labels needs neither materials nor equipment."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pypdfium2 as pdfium
import pytest
import zxingcpp
from PIL import Image
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.errors import Conflict, ValidationFailed
from labels import payload as lp
from labels import render, services
from tests.helpers import audit_events, count

MIN_PX_300 = render.MIN_TEXT_MM / 25.4 * 300


def lot_label(lot_id: str = "LOT-000123", *, expires_at: datetime | None = None,
              site: str | None = "CLEAN1") -> services.AssetLabel:
    return services.AssetLabel(
        kind_code="LOT", subject_id=lot_id, title="MATERIAL LOT",
        lines=("IL-2 (Proleukin) IL2", "Supplier lot: PRK-2291-A", "Store at 2-8 °C"),
        expires_at=expires_at if expires_at is not None
        else datetime(2027, 3, 31, 21, 59, tzinfo=UTC),
        site_code=site, site_timezone="Europe/Paris")


def equipment_label(equipment_id: str = "BSC-01") -> services.AssetLabel:
    return services.AssetLabel(
        kind_code="EQP", subject_id=equipment_id, title="EQUIPMENT",
        lines=("Biosafety cabinet, room B-104", "Type: biosafety_cabinet"),
        expires_at=None, site_code="CLEAN1", site_timezone="Europe/Paris")


@pytest.fixture
def printer(make_user):
    return make_user("olga", "operator")


@contextmanager
def session(app, db, person=None) -> Iterator:
    actor = person.actor if person is not None else Actor.system("test")
    with app.app_context(), db.transaction(actor=actor) as s:
        yield s


def print_it(app, db, person, subject, **request) -> services.PrintedLabel:
    request.setdefault("format", "zpl")
    with session(app, db, person) as s:
        printed = services.print_asset_label(s, subject, services.PrintRequest(**request),
                                             user_id=person.user_id)
    printed.content  # rendered after commit, as a view does  # noqa: B018
    return printed


def check(app, db, raw: str) -> services.PayloadCheck:
    with session(app, db) as s:
        return services.check_payload(s, raw)


def decode_png(data: bytes) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(data)))]


def decode_pdf(data: bytes) -> list[str]:
    document = pdfium.PdfDocument(data)
    try:
        found = []
        for index in range(len(document)):
            page = document[index]
            found += [r.text for r in zxingcpp.read_barcodes(page.render(scale=300 / 72).to_pil())]
            page.close()
        return found
    finally:
        document.close()


def zpl_payloads(zpl: str) -> list[str]:
    return [part.split("^FS")[0] for part in zpl.split("^FDMA,")[1:]]


@pytest.mark.requirement("SPEC §11")
@pytest.mark.requirement("21 CFR 11.10(e)")
def test_the_first_print_is_the_original_and_each_copy_is_recorded(app, db, printer) -> None:
    printed = print_it(app, db, printer, lot_label(), copies=2, workstation="WS-3")
    assert [label.serial for label in printed.labels] == [1, 2]
    zpl = printed.content.decode()
    assert zpl.count("^XA") == 2 and "REPRINT" not in zpl
    payloads = zpl_payloads(zpl)
    assert payloads == printed.payloads
    for serial, payload in enumerate(payloads, 1):
        assert re.fullmatch(rf"GMP1:LOT:LOT-000123:-:202703312159:{serial}:[A-Z2-7]{{103}}",
                            payload), payload
        assert check(app, db, payload).ok
    # the eye-readable text: the caller's lines, the expiry in site time (bold) and UTC
    assert "IL-2 (Proleukin) IL2" in zpl and "EXP: 2027-03-31 23:59 CEST" in zpl
    assert "(2027-03-31 21:59 UTC)" in zpl and "LOT-000123 COPY 2" in zpl
    with session(app, db) as s:
        records = services.asset_labels_of(s, "lot", "lot-000123")
    assert [(r.serial, r.reprint, r.printed_by, r.workstation) for r in records] == [
        (2, False, "olga", "WS-3"), (1, False, "olga", "WS-3")]  # newest first
    events = audit_events(db, entity_type="asset_label", entity_id=records[1].label_id)
    assert [e["action"] for e in events] == ["create"] and events[0]["username"] == "olga"
    assert count(db, "asset_label_print") == 2


@pytest.mark.requirement("EU GMP Annex 11 §12.4")
def test_a_later_print_is_a_reprint_with_its_reason(app, db, printer) -> None:
    with pytest.raises(Conflict) as refused:
        print_it(app, db, printer, equipment_label(), reprint=True, reason="smudged")
    assert refused.value.code == "not_printed"
    print_it(app, db, printer, equipment_label())
    with pytest.raises(Conflict) as refused:
        print_it(app, db, printer, equipment_label())
    assert refused.value.code == "already_printed"
    with pytest.raises(ValidationFailed):  # a reprint without a reason
        print_it(app, db, printer, equipment_label(), reprint=True)
    again = print_it(app, db, printer, equipment_label(), reprint=True,
                     reason="label smudged", copies=2)
    zpl = again.content.decode()
    assert zpl.count("REPRINT") >= 2
    assert [p.split(":")[5] for p in zpl_payloads(zpl)] == ["2", "3"]
    assert all(p.split(":")[:5] == ["GMP1", "EQP", "BSC-01", "-", "-"] for p in again.payloads)
    with session(app, db) as s:
        records = services.asset_labels_of(s, "EQP", "BSC-01")
    assert [(r.serial, r.reprint, r.reason) for r in records] == [
        (3, True, "label smudged"), (2, True, "label smudged"), (1, False, None)]
    events = audit_events(db, entity_type="asset_label", entity_id=records[0].label_id)
    assert events[0]["reason"] == "label smudged"
    # another subject of the same kind has its own original and serials
    other = print_it(app, db, printer, equipment_label("INC-02"))
    assert [label.serial for label in other.labels] == [1]


@pytest.mark.requirement("SPEC §11")
@pytest.mark.parametrize("fmt", ["png", "svg", "pdf", "zpl"])
def test_every_format_carries_the_signed_payload(app, db, printer, fmt: str) -> None:
    printed = print_it(app, db, printer, lot_label(), format=fmt)
    [payload] = printed.payloads
    assert printed.media_type == services.MEDIA_TYPES[fmt]
    if fmt == "png":
        # the real decoder reads the printed symbol back to the signed payload
        assert decode_png(printed.content) == [payload]
    elif fmt == "pdf":
        assert decode_pdf(printed.content) == [payload]
    elif fmt == "svg":
        svg = printed.content.decode()
        assert svg.startswith("<svg") or "<svg" in svg[:200]
        assert "MATERIAL LOT" in svg and "LOT-000123 COPY 1" in svg
    else:
        assert zpl_payloads(printed.content.decode()) == [payload]
    result = check(app, db, payload)
    assert result.ok and result.payload is not None
    assert (result.payload.kind_code, result.payload.subject_id, result.payload.coi_id) == (
        "LOT", "LOT-000123", "-")


def test_the_png_decodes_and_keeps_the_minimum_text_at_300_dpi(app, db, printer) -> None:
    printed = print_it(app, db, printer, lot_label(), format="png")
    assert decode_png(printed.content) == printed.payloads
    with session(app, db) as s:
        assert services.check_payload(s, printed.payloads[0]).ok
    view = render.build_asset_view(
        kind_code="LOT", subject_id="LOT-000123", title="MATERIAL LOT",
        lines=lot_label().lines, expires_at=lot_label().expires_at,
        site_timezone="Europe/Paris", payload=printed.payloads[0], serial=9999, reprint=True)
    plan = render.png_plan(view, dpi=300)
    assert min(plan.text_sizes()) >= MIN_PX_300 and plan.layout.fits


@pytest.mark.requirement("SPEC §11")
def test_a_signed_copy_never_printed_is_an_unknown_copy(app, db, printer) -> None:
    printed = print_it(app, db, printer, lot_label())
    with app.app_context():
        private = services.keyring().private_key
    # signed with the installation's key, but copy 7 (or another lot) was never printed
    for forged in (lp.sign(private, "LOT", "LOT-000123", "-", lot_label().expires_at, 7),
                   lp.sign(private, "EQP", "BSC-01", "-", None, 1)):
        result = check(app, db, forged)
        assert [code for code, _ in result.reasons] == ["unknown_copy"]
    assert check(app, db, printed.payloads[0]).ok
    # a changed expiry under the genuine signature never verifies
    changed = printed.payloads[0].replace(":202703312159:", ":202803312159:")
    assert [code for code, _ in check(app, db, changed).reasons] == ["bad_signature"]


@pytest.mark.requirement("SPEC §11")
def test_a_preview_records_nothing_and_never_verifies(app, db, printer) -> None:
    for fmt in ("png", "pdf", "zpl"):
        with session(app, db, printer) as s:
            preview = services.preview_asset_label(
                s, lot_label(), services.PrintRequest(format=fmt, reprint=True, reason="x"))
        content = preview.content
        assert preview.labels == [] and preview.payloads == []
        assert preview.filename == f"LOT-000123_PREVIEW.{fmt}"
        if fmt == "png":
            [code] = decode_png(content)
            assert code.startswith("PREVIEW:LOT:LOT-000123:-:")
            assert [c for c, _ in check(app, db, code).reasons] == ["malformed"]
        if fmt == "zpl":
            assert render.PREVIEW_BANNER in content.decode()
    assert count(db, "asset_label_print") == 0
    # the first real print after previews is still the original
    assert not print_it(app, db, printer, lot_label()).labels[0].reprint


def test_an_expired_lot_prints_under_the_expired_banner(app, db, printer) -> None:
    printed = print_it(app, db, printer,
                       lot_label(expires_at=utcnow() - timedelta(days=1)))
    assert render.BANNER_STATUSES["expired"] in printed.content.decode()


def test_a_subject_the_payload_cannot_carry_is_a_callers_bug(app, db, printer) -> None:
    for subject in (lot_label("ITM-AAAAAAAA"),
                    services.AssetLabel("FP", "ITM-AAAAAAAA", "X", (), None, None, "UTC")):
        with pytest.raises(ValueError), session(app, db, printer) as s:
            services.print_asset_label(s, subject, services.PrintRequest(format="zpl"),
                                       user_id=printer.user_id)
    assert count(db, "asset_label_print") == 0


def test_the_stock_of_the_site_is_respected(app, db, printer, make_user) -> None:
    admin = make_user("ada", "admin")
    with session(app, db, admin) as s:
        services.set_stock(s, "CLEAN1", "material_lot", "2x1")
    long_lines = (*lot_label().lines, "A very long line about where this lot is kept " * 3)
    subject = services.AssetLabel("LOT", "LOT-000124", "MATERIAL LOT", long_lines,
                                  None, "CLEAN1", "Europe/Paris")
    with pytest.raises(Conflict) as refused:
        print_it(app, db, printer, subject)
    assert refused.value.code == "label_does_not_fit"
    assert count(db, "asset_label_print") == 0
    with session(app, db) as s:
        assert services.stocks_of(s, "CLEAN1")["material_lot"] == "2x1"
        assert services.stocks_of(s, "CLEAN1")["equipment"] == "4x2"


def test_a_printed_copy_is_append_only_and_one_serial_per_subject(app, db, printer) -> None:
    printed = print_it(app, db, printer, lot_label())
    label_id = printed.labels[0].label_id
    for statement in ("UPDATE asset_label_print SET reason = 'x' WHERE label_id = :id",
                      "DELETE FROM asset_label_print WHERE label_id = :id"):
        with pytest.raises(DBAPIError), db.engine.begin() as c:
            c.execute(text(statement), {"id": label_id})
    assert count(db, "asset_label_print") == 1
    # a second row for copy 1 of the lot (two "originals" printed at once) is refused
    with pytest.raises(DBAPIError), db.engine.begin() as c:
        c.execute(text(
            "INSERT INTO asset_label_print (label_id, kind_code, subject_id, serial, format, "
            "payload_digest, key_id, reprint, printed_by, printed_at) VALUES ('LBL-TWIN', "
            "'LOT', 'LOT-000123', 1, 'zpl', :digest, 'k', false, :user, :at)"),
            {"digest": "0" * 64, "user": printer.user_id, "at": "2026-01-01T00:00:00.000000Z"})
    assert count(db, "asset_label_print") == 1


def test_the_offline_check_describes_an_asset_label(app, db, printer, runner) -> None:
    printed = print_it(app, db, printer, lot_label())
    result = runner.invoke(args=["labels", "verify", printed.payloads[0]])
    assert result.exit_code == 0, result.output
    assert "kind:    LOT (material lot)" in result.output
    assert "id:      LOT-000123" in result.output
    assert "COI ID:  - (names no patient)" in result.output
    assert "expires: 2027-03-31 21:59 UTC" in result.output and "copy:    1" in result.output
    changed = printed.payloads[0].replace("LOT-000123", "LOT-000124")
    assert runner.invoke(args=["labels", "verify", changed]).exit_code == 1


def test_the_printed_copies_dump_for_an_api(app, db, printer) -> None:
    from labels.http import AssetLabelSchema

    print_it(app, db, printer, equipment_label(), workstation="WS-1")
    with session(app, db) as s:
        [record] = services.asset_labels_of(s, "EQP", "BSC-01")
    dumped = AssetLabelSchema().dump(record)
    assert {k: dumped[k] for k in ("kind_code", "subject_id", "serial", "format", "reprint",
                                   "printed_by", "workstation")} == {
        "kind_code": "EQP", "subject_id": "BSC-01", "serial": 1, "format": "zpl",
        "reprint": False, "printed_by": "olga", "workstation": "WS-1"}
    assert dumped["label_id"].startswith("LBL-") and dumped["printed_at"]
