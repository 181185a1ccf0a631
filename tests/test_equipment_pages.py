"""Equipment pages (SPEC §7b): the list with status badges and the register form (admin),
the equipment page with its logbook, the event form; refused forms keep what was typed."""

from __future__ import annotations

import re
from datetime import timedelta

from gmp_mes.clock import clock
from tests.conftest import PASSWORD
from tests.test_equipment_fixtures import Shop, shop_fixture  # noqa: F401
from tests.test_pages_core import page_login


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def _post(client, path: str, data: dict) -> object:
    token = _csrf(client.get(path if "/events" not in path else path.rsplit("/", 1)[0])
                  .get_data(as_text=True))
    return client.post(path, data={**data, "csrf_token": token},
                       headers={"Accept": "text/html"})


def test_admin_registers_on_the_list_page(shop: Shop, client) -> None:
    page_login(client, shop.admin)
    html = client.get("/equipment").get_data(as_text=True)
    assert "Register equipment" in html and "No equipment registered" in html
    response = _post(client, "/equipment", {
        "equipment_id": "bsc-01", "type": "biosafety_cabinet", "name": "Cabinet one",
        "site": "CLEAN1", "calibration_interval": "P180D", "cleaning_required": "on"})
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/equipment/BSC-01")
    html = client.get("/equipment").get_data(as_text=True)
    assert "BSC-01" in html and 'class="badge stop">calibration overdue' in html


def test_a_refused_register_form_keeps_what_was_typed(shop: Shop, client) -> None:
    page_login(client, shop.admin)
    response = _post(client, "/equipment", {
        "equipment_id": "OK-1", "type": "Not A Type", "name": "Typed name",
        "site": "CLEAN1", "calibration_interval": "yearly"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'value="Typed name"' in html and 'value="yearly"' in html
    assert "error-summary" in html and "Calibration interval" in html


def test_operators_see_no_register_form(shop: Shop, client) -> None:
    page_login(client, shop.operator)
    html = client.get("/equipment").get_data(as_text=True)
    assert "Register equipment" not in html and "Equipment" in html


def test_equipment_page_event_form_and_logbook(shop: Shop, client) -> None:
    shop.register("INC-01", "incubator", interval="P365D")
    clock.advance(timedelta(minutes=1))
    page_login(client, shop.operator)
    html = client.get("/equipment/INC-01").get_data(as_text=True)
    assert "never calibrated" in html and "Record in the logbook" in html
    response = _post(client, "/equipment/INC-01/events",
                     {"kind": "calibrated", "password": PASSWORD})
    assert response.status_code == 302
    html = client.get("/equipment/INC-01").get_data(as_text=True)
    assert "fit for use" in html and "valid until" in html
    assert "performed" in html and "Olga (olga)" in html  # the signed line
    shop.check("B-77", needs=("incubator",), given=("INC-01",), apply_record=5)
    html = client.get("/equipment/INC-01").get_data(as_text=True)
    assert 'href="/batches/B-77"' in html


def test_a_refused_event_form_keeps_the_reason_never_the_password(shop: Shop, client) -> None:
    shop.register("INC-01", "incubator")
    page_login(client, shop.operator)
    response = _post(client, "/equipment/INC-01/events", {
        "kind": "out_of_service", "reason": "door seal torn", "password": "wrong"})
    assert response.status_code == 401
    html = response.get_data(as_text=True)
    assert "wrong password" in html and 'value="door seal torn"' in html
    assert "wrong\"" not in html.split('type="password"')[1][:80]
    response = _post(client, "/equipment/INC-01/events",
                     {"kind": "returned_to_service", "password": PASSWORD})
    assert response.status_code == 409
    assert "is not out of service" in response.get_data(as_text=True)
    response = _post(client, "/equipment/INC-01/events",
                     {"kind": "out_of_service", "password": PASSWORD})
    assert response.status_code == 422 and "needs a reason" in response.get_data(as_text=True)


def test_nav_entry(shop: Shop, client) -> None:
    page_login(client, shop.qa)
    assert 'href="/equipment"' in client.get("/").get_data(as_text=True)


def test_the_header_search_opens_an_equipment_page(shop: Shop, client) -> None:
    shop.register("INC-01", "incubator")
    page_login(client, shop.operator)
    response = client.get("/search?q=inc-01")
    assert response.status_code == 302 and response.headers["Location"] == "/equipment/INC-01"
    assert client.get("/search?q=NOPE-1").status_code == 404


def test_the_dashboard_lists_equipment_needing_attention(shop: Shop, client) -> None:
    shop.register("BSC-01", "biosafety_cabinet", interval="P180D")
    shop.register("INC-01", "incubator", interval="P365D")
    for equipment_id in ("BSC-01", "INC-01"):
        shop.event(equipment_id, "calibrated")
    page_login(client, shop.operator)
    assert "needing attention" not in client.get("/").get_data(as_text=True)  # all fit
    shop.register("CNT-01", "cell_counter", interval="P10D")
    shop.event("CNT-01", "calibrated")
    shop.event("BSC-01", "out_of_service", reason="HEPA filter torn")
    page = client.get("/").get_data(as_text=True)
    assert "Equipment at CLEAN1 needing attention" in page
    panel = page.split('class="data equipment-due"')[1].split("</table>")[0]
    assert "BSC-01" in panel and "HEPA filter torn" in panel
    assert "CNT-01" in panel  # its calibration runs out within 14 days
    assert "INC-01" not in panel
    assert panel.index("BSC-01") < panel.index("CNT-01")  # unusable first
