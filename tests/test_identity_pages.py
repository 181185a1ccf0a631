"""Identity pages: scan station, bedside, item, enrolment and collection forms."""

from __future__ import annotations

import re
from datetime import timedelta

from gmp_mes.clock import utcnow
from tests.conftest import PASSWORD
from tests.helpers import count
from tests.test_identity_fixtures import (  # noqa: F401
    APHERESIS,
    PLANT,
    TREATMENT,
    World,
    world_fixture,
)

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    def __init__(self, client, person) -> None:
        self.client = client
        page = client.get("/login").get_data(as_text=True)
        response = client.post("/login", data={
            "username": person.username, "password": PASSWORD,
            "csrf_token": CSRF.search(page).group(1)})
        assert response.status_code == 302, response.get_data(as_text=True)[:500]

    def get(self, path: str):
        return self.client.get(path, headers={"Accept": "text/html"})

    def post(self, path: str, data: dict):
        page = self.get("/")  # every page carries the session's CSRF token (log-out form)
        token = CSRF.search(page.get_data(as_text=True)).group(1)
        return self.client.post(path, data={**data, "csrf_token": token},
                                headers={"Accept": "text/html"})

    def post_follow(self, path: str, data: dict):
        """A form that answers post/redirect/get: the POST redirects, the GET shows."""
        posted = self.post(path, data)
        assert posted.status_code == 302, posted.get_data(as_text=True)[:300]
        return self.get(posted.headers["Location"])


def test_scan_page_ok_and_stop(world: World, client) -> None:
    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="released", batch_number="B-1",
                     expires_at=utcnow() + timedelta(days=2))
    browser = Browser(client, world.operator)
    page = browser.get("/scan").get_data(as_text=True)
    assert 'id="payload"' in page and "autofocus" in page
    posted = browser.post("/scan", {"payload": world.payload(bag) + "\r\n"})
    assert posted.status_code == 302  # post/redirect/get: Back never re-posts a scan
    ok = browser.get(posted.headers["Location"]).get_data(as_text=True)
    assert "verdict ok" in ok and bag in ok and "B-1" in ok and 'class="coi-check"' in ok
    assert "autofocus" in ok  # ready for the next scan without the mouse
    world.set_status(bag, "blocked")
    stop = browser.get(browser.post("/scan", {"payload": world.payload(bag)}).headers[
        "Location"]).get_data(as_text=True)
    assert "verdict stop" in stop and "blocked" in stop
    garbage = browser.get(browser.post("/scan", {"payload": "NOT A LABEL"}).headers[
        "Location"]).get_data(as_text=True)
    assert "STOP" in garbage and "malformed" in garbage


def test_scan_form_needs_csrf(world: World, client) -> None:
    Browser(client, world.operator)
    response = client.post("/scan", data={"payload": "x"}, headers={"Accept": "text/html"})
    assert response.status_code == 403


def test_bedside_page_match_and_administer(world: World, client) -> None:
    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="released", site=TREATMENT,
                     expires_at=utcnow() + timedelta(days=2))
    wristband, product = world.payload(patient["wristband_item_id"]), world.payload(bag)
    browser = Browser(client, world.clinician)
    posted = browser.post("/bedside", {"patient_payload": wristband, "product_payload": product})
    assert posted.status_code == 302  # post/redirect/get: Back never re-posts the check
    html = browser.get(posted.headers["Location"]).get_data(as_text=True)
    assert "MATCH" in html and 'name="password"' in html and product in html
    # The verdict is shown once; a reload (or Back) shows the empty form, records nothing.
    checks = count(world.db, "bedside_verification")
    reload = browser.get("/bedside").get_data(as_text=True)
    assert "MATCH" not in reload and count(world.db, "bedside_verification") == checks
    wrong = browser.post("/bedside/administer", {
        "patient_payload": wristband, "product_payload": product, "password": "nope",
        "meaning": "administered"})
    assert wrong.status_code == 401 and "wrong password" in wrong.get_data(as_text=True)
    done = browser.post("/bedside/administer", {
        "patient_payload": wristband, "product_payload": product, "password": PASSWORD,
        "meaning": "administered"})
    assert done.status_code == 302  # post/redirect/get (issue 15)
    shown = browser.get(done.headers["Location"])
    assert shown.status_code == 200 and "ADMINISTERED" in shown.get_data(as_text=True)
    again = browser.post_follow("/bedside", {"patient_payload": wristband,
                                             "product_payload": product})
    html = again.get_data(as_text=True)
    assert "DO NOT INFUSE" in html and "already_administered" in html
    assert 'name="password"' not in html


def test_bedside_page_shows_every_reason(world: World, client) -> None:
    patient, other = world.enrol(), world.enrol()
    bag = world.item(other["coi_id"], status="quarantine")
    browser = Browser(client, world.clinician)
    html = browser.post_follow("/bedside", {
        "patient_payload": world.payload(patient["wristband_item_id"]),
        "product_payload": world.payload(bag)}).get_data(as_text=True)
    for code in ("coi_mismatch", "status_not_infusible", "wrong_site"):
        assert code in html


def test_item_page(world: World, client) -> None:
    patient = world.enrol()
    sm = world.collect(patient["coi_id"])
    bag = world.item(patient["coi_id"], status="quarantine", parents=(sm,))
    html = Browser(client, world.qa).get(f"/items/{bag}").get_data(as_text=True)
    assert sm in html and "Chain of custody" in html and "Labels" in html
    assert Browser(client, world.qa).get("/items/ITM-NOPE0000").status_code == 404


def test_enrol_and_collection_forms(world: World, client) -> None:
    browser = Browser(client, world.clinician)
    bad = browser.post("/patients/new", {"given_name": "", "family_name": "Curie",
                                         "date_of_birth": "1867-11-07x", "mrn": "M1",
                                         "treatment_site": TREATMENT})
    assert bad.status_code == 422
    html = bad.get_data(as_text=True)
    # Every field error at once: the empty name and the malformed date.
    assert "enter a date like 1970-05-17" in html and "Missing data for required field" in html
    good = browser.post("/patients/new", {"given_name": "Marie", "family_name": "Curie",
                                          "date_of_birth": "1967-11-07", "mrn": "M1",
                                          "treatment_site": TREATMENT})
    assert good.status_code == 302
    patient_page = browser.get(good.headers["Location"]).get_data(as_text=True)
    assert "CURIE, Marie" in patient_page
    coi_id = re.search(r"/patients/([A-Z0-9*]{14})", good.headers["Location"]).group(1)
    dup = browser.post("/patients/new", {"given_name": "Marie", "family_name": "Curie",
                                         "date_of_birth": "1967-11-07", "mrn": "M1",
                                         "treatment_site": TREATMENT})
    assert dup.status_code == 409 and coi_id in dup.get_data(as_text=True)
    future = (utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    bad = browser.post("/collections/new", {"coi_id": coi_id, "collected_at": future,
                                            "site": APHERESIS, "volume_ml": "200"})
    assert bad.status_code == 422 and "future" in bad.get_data(as_text=True)
    typo = browser.post("/collections/new", {"coi_id": coi_id, "collected_at": "yesterday",
                                             "site": APHERESIS, "volume_ml": "2OO"})
    html = typo.get_data(as_text=True)
    assert typo.status_code == 422 and "enter the volume in mL" in html
    assert "enter the date and time of collection" in html
    past = (utcnow() - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    ok = browser.post("/collections/new", {"coi_id": coi_id, "collected_at": past,
                                           "site": APHERESIS, "volume_ml": "200"})
    assert ok.status_code == 302 and "/items/ITM-" in ok.headers["Location"]
    assert count(world.db, "collection") == 1


def test_dashboard_panel_and_nav(world: World, client) -> None:
    patient = world.enrol()
    world.item(patient["coi_id"], status="released", site=TREATMENT)
    html = Browser(client, world.clinician).get("/").get_data(as_text=True)
    assert f"Items at {TREATMENT}" in html and "/bedside" in html


def test_item_page_custody_form(world: World, client) -> None:
    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="released", post_thaw_window="PT3H",
                     expires_at=utcnow() + timedelta(days=5))
    operator = Browser(client, world.operator)
    html = operator.get(f"/items/{bag}").get_data(as_text=True)
    assert 'class="id-custody' in html and "Record custody" in html
    bad = operator.post(f"/items/{bag}/custody", {"action": "thaw", "site": PLANT})
    assert bad.status_code == 409 and "cannot go from released to thawed" in \
        bad.get_data(as_text=True)
    # Custody is recorded where the item is: the page says why, nothing is written.
    elsewhere = operator.post(f"/items/{bag}/custody", {"action": "thaw", "site": TREATMENT})
    assert elsewhere.status_code == 409 and "is recorded where the item is" in \
        elsewhere.get_data(as_text=True)
    shipped = operator.post(f"/items/{bag}/custody", {"action": "ship", "site": TREATMENT})
    assert shipped.status_code == 302
    nurse = Browser(client.application.test_client(), world.clinician)
    for action in ("receive", "thaw"):
        done = nurse.post(f"/items/{bag}/custody", {"action": action, "site": TREATMENT,
                                                    "location": "Ward 3"})
        assert done.status_code == 302, done.get_data(as_text=True)[:300]
    trail = nurse.get(f"/items/{bag}").get_data(as_text=True)
    assert "ship" in trail and "receive" in trail and "thaw" in trail
    html = nurse.post_follow("/bedside", {
        "patient_payload": world.payload(patient["wristband_item_id"]),
        "product_payload": world.payload(bag)}).get_data(as_text=True)
    assert "MATCH" in html and "administer before" in html and "post-thaw" in html


def test_received_starting_material_can_be_consumed(world: World) -> None:
    patient = world.enrol()
    sm = world.collect(patient["coi_id"])
    world.set_status(sm, "shipped", "received", "consumed")
    assert world.get(sm).status == "consumed"
