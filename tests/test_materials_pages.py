"""The materials pages (SPEC §7b ``/materials``, ``/lots/<lot_id>``): create a material,
receive a lot, release and reject it with an e-signature; a refused form comes back with
what was typed (never the password) and its message at the field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import count
from tests.test_identity_pages import Browser
from tests.test_materials_fixtures import Store, store_fixture  # noqa: F401 - fixture

LOT_LINK = 'href="/lots/'


def _receive(browser: Browser, **fields: str) -> Any:
    data = {"material": "IL2", "supplier": "Clinigen", "supplier_lot": "P-77",
            "expires_at": "2031-06-30", "quantity": "12.5", "coa_reference": "COA-9"}
    return browser.post("/materials/lots", {**data, **fields})


@pytest.mark.requirement("EU GMP Part IV 7")
def test_create_receive_release_on_the_pages(store: Store, client: Any) -> None:
    qa = Browser(client, store.qa)
    page = qa.get("/materials").get_data(as_text=True)
    assert "Material master" in page and 'name="code"' in page
    refused = qa.post("/materials", {"code": "IL2", "name": "Interleukin-2",
                                     "kind": "potion", "unit": "vial"})
    assert refused.status_code == 422
    text = refused.get_data(as_text=True)
    assert "Nothing was saved" in text and 'value="Interleukin-2"' in text
    created = qa.post_follow("/materials", {"code": "IL2", "name": "Interleukin-2",
                                            "kind": "reagent", "unit": "vial"})
    assert "material IL2 created" in created.get_data(as_text=True)

    op = Browser(client, store.operator)
    assert 'name="code"' not in op.get("/materials").get_data(as_text=True)  # qa, admin
    comma = _receive(op, quantity="12,5")  # a point site refuses a comma, never guesses
    assert comma.status_code == 422
    assert "point" in comma.get_data(as_text=True) and 'value="P-77"' in comma.get_data(
        as_text=True)
    received = op.post("/materials/lots", {
        "material": "IL2", "supplier": "Clinigen", "supplier_lot": "P-77",
        "expires_at": "2031-06-30", "quantity": "12.5", "coa_reference": "COA-9"})
    assert received.status_code == 302 and received.headers["Location"].endswith(
        "/lots/LOT-000001")
    lot_page = op.get("/lots/LOT-000001").get_data(as_text=True)
    assert "quarantine" in lot_page and "12.5 of 12.5 vial" in lot_page
    assert "Release lot" not in lot_page  # only QA decides

    qa = Browser(client, store.qa)
    wrong = qa.post("/lots/LOT-000001/release", {"password": "not-my-password"})
    assert wrong.status_code == 401
    assert "wrong password" in wrong.get_data(as_text=True)
    assert "not-my-password" not in wrong.get_data(as_text=True)
    released = qa.post_follow("/lots/LOT-000001/release", {"password": store.qa.password})
    text = released.get_data(as_text=True)
    assert "lot LOT-000001 released" in text and 'badge ok">released' in text
    assert "Release lot" not in text and "Where used" in text


@pytest.mark.requirement("EU GMP Part IV 3")
def test_the_receiver_is_refused_on_the_page_and_reject_needs_a_reason(
        store: Store, client: Any) -> None:
    store.material("IL2")
    lot = store.lot("IL2", 3, release=False, received_by=store.qa)
    qa = Browser(client, store.qa)
    refused = qa.post(f"/lots/{lot}/release", {"password": store.qa.password})
    assert refused.status_code == 403
    assert "another QA user releases it" in refused.get_data(as_text=True)
    no_reason = qa.post(f"/lots/{lot}/reject", {"password": store.qa.password, "reason": ""})
    assert no_reason.status_code == 422 and "needs a reason" in no_reason.get_data(
        as_text=True)
    rejected = qa.post_follow(f"/lots/{lot}/reject",
                              {"password": store.qa.password, "reason": "seal broken"})
    text = rejected.get_data(as_text=True)
    assert "rejected" in text and "seal broken" in text
    assert count(store.db, "signature") >= 1
    listing = qa.get("/materials").get_data(as_text=True)
    assert LOT_LINK + lot in listing and 'badge stop">rejected' in listing


def test_the_lot_page_previews_prints_and_reprints_its_label(store: Store,
                                                              client: Any) -> None:
    store.material("IL2")
    lot = store.lot("IL2", 3)
    op = Browser(client, store.operator)
    page = op.get(f"/lots/{lot}").get_data(as_text=True)
    assert "Print label" in page and "No label printed yet" in page
    preview = op.get(f"/lots/{lot}/label/preview?format=png")
    assert preview.status_code == 200 and preview.mimetype == "image/png"
    assert count(store.db, "asset_label_print") == 0
    printed = op.post(f"/lots/{lot}/label", {"format": "pdf"})
    assert printed.status_code == 200 and printed.mimetype == "application/pdf"
    page = op.get(f"/lots/{lot}").get_data(as_text=True)
    assert "Reprint label" in page and printed.headers["X-Label-Id"] in page
    again = op.post(f"/lots/{lot}/label", {"format": "pdf"})  # no reprint: refused
    assert again.status_code == 302
    assert "already has a label" in op.get(again.headers["Location"]).get_data(as_text=True)
    reprint = op.post(f"/lots/{lot}/label", {"format": "zpl", "reprint": "1",
                                              "reason": "label smudged"})
    assert reprint.status_code == 200 and count(store.db, "asset_label_print") == 2


def test_the_lots_list_pages_newest_first(store: Store, client: Any) -> None:
    store.material("IL2", unit="vial")
    lots = [store.lot("IL2", 1, release=False) for _ in range(3)]
    op = Browser(client, store.operator)
    first = op.get("/materials?size=2").get_data(as_text=True)
    assert [lot in first for lot in lots] == [False, True, True]  # the newest two
    assert "page=2" in first
    second = op.get("/materials?size=2&page=2").get_data(as_text=True)
    assert [lot in second for lot in lots] == [True, False, False]


def test_the_dashboard_lists_lots_to_decide_and_lots_expiring(store: Store, client: Any,
                                                             make_user: Any) -> None:
    from datetime import timedelta

    store.material("IL2", unit="vial")
    waiting = store.lot("IL2", 3, release=False)
    expiring = store.lot("IL2", 2, expires_in=timedelta(days=10))
    later = store.lot("IL2", 2, expires_in=timedelta(days=200))
    page = Browser(client, store.qa).get("/").get_data(as_text=True)
    assert "Material lots at CLEAN1" in page
    awaiting = page.split('class="data lots-awaiting"')[1].split("</table>")[0]
    soon = page.split('class="data lots-expiring"')[1].split("</table>")[0]
    assert waiting in awaiting and expiring not in awaiting
    assert expiring in soon and later not in soon and waiting not in soon
    clinician = make_user("clara", "clinician", site="CLEAN1")
    client.post("/logout")
    clinician_page = Browser(client, clinician).get("/").get_data(as_text=True)
    assert "Material lots at" not in clinician_page
