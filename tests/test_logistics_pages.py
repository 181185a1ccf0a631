"""The logistics pages (SPEC §7b ``/shipments/<id>``): ship on the list page, upload a
logger's CSV, see the chart and the excursion, receive by scanning (one scan a line),
QA's signed disposition; refused forms keep what was typed, never the password."""

from __future__ import annotations

import io
from typing import Any

import pytest

from tests.helpers import count
from tests.test_identity_fixtures import PLANT, TREATMENT, World, world_fixture  # noqa: F401
from tests.test_identity_pages import Browser
from tests.test_logistics_shipments import Route, log_csv


@pytest.mark.requirement("SPEC §14")
def test_ship_upload_receive_decide_on_the_pages(world: World, login: Any, client: Any) -> None:
    route = Route(world, login)
    op = Browser(client, world.operator)
    page = op.get("/shipments").get_data(as_text=True)
    assert "Ship items" in page and 'name="items"' in page
    refused = op.post("/shipments", {"items": "\n".join(route.bags), "from_site": PLANT,
                                     "to_site": TREATMENT, "min_c": "-150", "max_c": "-196",
                                     "logger_id": "LOG-77"})
    assert refused.status_code == 422
    text = refused.get_data(as_text=True)
    assert "Nothing was saved" in text and 'value="LOG-77"' in text and route.bags[0] in text
    shipped = op.post("/shipments", {"items": "\n".join(route.bags) + "\n", "from_site": PLANT,
                                     "to_site": TREATMENT, "min_c": "-196", "max_c": "-150",
                                     "logger_id": "LOG-77"})
    assert shipped.status_code == 302, shipped.get_data(as_text=True)[:500]
    url = shipped.headers["Location"]
    shipment = url.rsplit("/", 1)[1]
    bad = op.post(f"{url}/temperature-log",
                  {"file": (io.BytesIO(b"time,temp\n1,2\n"), "log.csv")})
    assert bad.status_code == 422 and "line 1" in bad.get_data(as_text=True)
    temps = [-180.0] * 30
    temps[10:13] = [-140.0, -130.0, -145.0]
    uploaded = op.post(f"{url}/temperature-log",
                       {"file": (io.BytesIO(log_csv(temps).encode()), "log.csv")})
    assert uploaded.status_code == 302
    text = op.get(url).get_data(as_text=True)
    assert 'class="chart temperature-chart"' in text and "data:image/svg+xml;base64," in text
    assert 'class="excursion"' in text and "-130.0" in text

    doc = Browser(client, world.clinician)
    assert "On the way to your site" in doc.get("/").get_data(as_text=True)
    assert "Scan every bag" in doc.get(url).get_data(as_text=True)
    posted = doc.post(f"{url}/receive", {"payloads": "\r\n".join(
        world.payload(b) for b in route.bags) + "\r\n", "location": "LN2 tank 1"})
    assert posted.status_code == 302
    text = doc.get(posted.headers["Location"]).get_data(as_text=True)
    assert "ON HOLD" in text and "temperature excursion" in text
    scanned = doc.post("/scan", {"payload": world.payload(route.bags[0])})
    assert scanned.status_code == 302  # the scan station says why the bag is held
    stop = doc.get(scanned.headers["Location"]).get_data(as_text=True)
    assert "verdict stop" in stop and "excursion outside its condition" in stop

    qa = Browser(client, world.qa)
    dashboard = qa.get("/").get_data(as_text=True)
    assert "waiting for QA&#39;s disposition" in dashboard or "waiting for QA's disposition" \
        in dashboard
    assert f'/shipments/{shipment}"' in dashboard
    wrong = qa.post(f"{url}/disposition", {"decision": "accept",
                                           "justification": "stability data cover 3 min",
                                           "password": "not-my-password"})
    assert wrong.status_code == 401
    text = wrong.get_data(as_text=True)
    assert "wrong password" in text and "not-my-password" not in text
    assert "stability data cover 3 min" in text
    decided = qa.post_follow(f"{url}/disposition", {
        "decision": "accept", "justification": "stability data cover 3 min",
        "password": world.qa.password})
    text = decided.get_data(as_text=True)
    assert f"shipment {shipment}: QA accepted" in text and "ON HOLD" not in text
    assert count(world.db, "shipment_receipt") == 1
