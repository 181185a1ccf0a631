"""Lists and search (issue 15, SPEC §7b): the patient list and its search (what the user
may see), the header's search box, the audit trail paged by key with filters, a readable
change view and the CSV export, paging on batches and alerts."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from gmp_mes import audit
from gmp_mes.alerts import AlertSpec, raise_alert
from gmp_mes.audit import Actor
from tests.helpers import assert_problem, audit_events
from tests.test_identity_fixtures import (  # noqa: F401
    APHERESIS,
    OTHER_TREATMENT,
    PLANT,
    TREATMENT,
    World,
    world_fixture,
)
from tests.test_identity_pages import Browser


def _rows(html: str) -> list[str]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", body, re.S)


@pytest.mark.requirement("GDPR Art. 5(1)(c)")
def test_patient_search_by_name_mrn_and_coi_respects_what_the_user_may_see(
        world: World, client, make_user) -> None:
    mine = world.enrol(mrn="MRN-77", given_name="Grace", family_name="Hopper")
    theirs = world.enrol(mrn="MRN-88", site=OTHER_TREATMENT, given_name="Grace",
                         family_name="Murray")
    browser = Browser(client, world.clinician)  # a clinician of TREATMENT
    listing = browser.get("/patients").get_data(as_text=True)
    assert "HOPPER, Grace" in listing and "Murray" not in listing
    assert mine["coi_id"] in listing and theirs["coi_id"] in listing  # COI and initials
    assert "G.M." in listing and "MRN-88" not in listing
    by_name = browser.get("/patients?q=grace").get_data(as_text=True)
    assert len(_rows(by_name)) == 1 and mine["coi_id"] in by_name
    assert theirs["coi_id"] not in by_name  # a name search never reveals hidden patients
    assert theirs["coi_id"] not in browser.get("/patients?q=MRN-88").get_data(as_text=True)
    by_mrn = browser.get("/patients?q=mrn-77").get_data(as_text=True)
    assert len(_rows(by_mrn)) == 1 and "HOPPER, Grace" in by_mrn
    by_coi = browser.get(f"/patients?q={theirs['coi_id'].lower()}").get_data(as_text=True)
    assert len(_rows(by_coi)) == 1 and "G.M." in by_coi and "Murray" not in by_coi
    # QA sees every identity; a name search finds both.
    qa = Browser(client.application.test_client(), world.qa)
    both = qa.get("/patients?q=Grace").get_data(as_text=True)
    assert "HOPPER, Grace" in both and "MURRAY, Grace" in both
    # Wildcards are text, not patterns.
    assert "No patient you may see matches" in browser.get("/patients?q=%25").get_data(
        as_text=True)


def test_patient_list_pages(world: World, client) -> None:
    for n in range(5):
        world.enrol(family_name=f"Pager{n}")
    browser = Browser(client, world.clinician)
    first = browser.get("/patients?size=2").get_data(as_text=True)
    assert len(_rows(first)) == 2 and "Next page" in first and "Previous page" not in first
    assert "PAGER4" in first and "PAGER3" in first  # newest first
    third = browser.get("/patients?size=2&page=3").get_data(as_text=True)
    assert len(_rows(third)) == 1 and "PAGER0" in third and "Next page" not in third


def test_header_search_opens_item_coi_label_and_refuses_a_forged_label(
        world: World, client) -> None:
    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="released", batch_number="B-1")
    browser = Browser(client, world.operator)
    assert 'id="global-search"' in browser.get("/").get_data(as_text=True)
    item = browser.get(f"/search?q={bag.lower()}")
    assert item.status_code == 302 and item.headers["Location"].endswith(f"/items/{bag}")
    coi = browser.get(f"/search?q={patient['coi_id']}")
    assert coi.headers["Location"].endswith(f"/patients/{patient['coi_id']}")
    payload = world.payload(bag)
    label = client.get("/search", query_string={"q": " " + payload + " "})
    assert label.status_code == 302 and label.headers["Location"].endswith(f"/items/{bag}")
    forged = payload[:-4] + ("AAAA" if not payload.endswith("AAAA") else "BBBB")
    refused = client.get("/search", query_string={"q": forged}, headers={"Accept": "text/html"})
    assert refused.status_code in (409, 422) and "refused" in refused.get_data(as_text=True)
    missing = browser.get("/search?q=nothing-like-this")
    assert missing.status_code == 404 and "Nothing found" in missing.get_data(as_text=True)


def _events(world: World, n: int, *, action: str = "test_event", who: str = "qa1") -> None:
    person = world.qa
    with world.db.transaction(actor=Actor(who, person.user_id, "Q A")) as s:
        for i in range(n):
            audit.record(s, action, "thing", f"T{i:04d}",
                         old={"volume_ml": i, "note": "=HYPERLINK(1)"},
                         new={"volume_ml": i + 1, "note": "=HYPERLINK(1)"})


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_audit_pages_by_key_through_every_event(world: World, client) -> None:
    _events(world, 230)
    browser = Browser(client, world.qa)
    first = browser.get("/audit?entity_type=thing").get_data(as_text=True)
    rows = _rows(first)
    assert len(rows) == 100 and "T0229" in rows[0] and "T0130" in rows[-1]
    older = re.search(r'href="([^"]*before=\d+[^"]*)"', first).group(1).replace("&amp;", "&")
    assert "entity_type=thing" in older  # the filter stays
    second = browser.get(older).get_data(as_text=True)
    assert "T0129" in _rows(second)[0] and "T0030" in _rows(second)[-1]
    assert "Newer events" in second
    third_link = re.search(r'href="([^"]*before=\d+[^"]*)"', second).group(1)
    third = browser.get(third_link.replace("&amp;", "&")).get_data(as_text=True)
    assert len(_rows(third)) == 30 and "Older events" not in third
    newer = re.search(r'href="([^"]*after=\d+[^"]*)"', third).group(1).replace("&amp;", "&")
    back = browser.get(newer).get_data(as_text=True)
    assert _rows(back) == _rows(second)
    # The change view: one line per field, old → new.
    assert re.search(r"<dt>volume ml</dt>\s*<dd><del>229</del>.*?<ins>230</ins>", first, re.S)


def test_audit_filters_and_refused_time(world: World, client) -> None:
    _events(world, 3)
    _events(world, 2, action="other_event")
    browser = Browser(client, world.qa)
    page = browser.get("/audit?action=other_event").get_data(as_text=True)
    assert len(_rows(page)) == 2
    bad = browser.get("/audit?since=yesterday")
    assert bad.status_code == 422 and "not a date and time" in bad.get_data(as_text=True)
    assert "data-focus" in bad.get_data(as_text=True)
    future = browser.get("/audit?since=2999-01-01T00:00").get_data(as_text=True)
    assert "No events match" in future


def test_audit_page_needs_qa_or_admin(world: World, client) -> None:
    browser = Browser(client, world.operator)
    assert browser.get("/audit").status_code == 403
    assert browser.get("/audit.csv").status_code == 403


@pytest.mark.requirement("21 CFR 11.10(b)")
def test_audit_csv_exports_every_matching_event_with_the_page_filters(
        world: World, client) -> None:
    _events(world, 1234)
    browser = Browser(client, world.qa)
    response = browser.get("/audit.csv?entity_type=thing")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.is_streamed
    assert "attachment" in response.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    expected = audit_events(world.db, entity_type="thing")
    assert len(table) == len(expected) == 1234
    assert [int(r["seq"]) for r in table] == sorted((e["seq"] for e in expected), reverse=True)
    row = table[0]
    assert row["record_id"] == "T1233" and row["time_utc"].endswith("Z")
    assert "volume_ml: 1233 → 1234" in row["changes"]
    assert row["hash"] == expected[-1]["hash"]
    only = browser.get("/audit.csv?entity_id=T0007").get_data(as_text=True)
    assert len(list(csv.DictReader(io.StringIO(only)))) == 1


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_audit_csv_export_is_itself_recorded_with_its_filters(world: World, client) -> None:
    _events(world, 3)
    browser = Browser(client, world.qa)
    before = audit_events(world.db, action="audit.exported")
    response = browser.get("/audit.csv?entity_type=thing&since=2026-01-01T00:00")
    assert response.status_code == 200
    table = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(table) == 3  # the export event does not match its own filter
    after = audit_events(world.db, action="audit.exported")
    assert len(after) == len(before) + 1
    event = json.loads(after[-1]["record"])
    assert after[-1]["username"] == world.qa.username and event["entity_type"] == "audit_trail"
    filters = event["new"]["filters"]
    assert filters["entity_type"] == "thing" and filters["since"].endswith("Z")
    # A refused filter exports nothing and records nothing.
    assert browser.get("/audit.csv?since=yesterday").status_code == 422
    assert len(audit_events(world.db, action="audit.exported")) == len(after)
    # The whole trail, unfiltered, is recorded with empty filters and listed in the trail.
    whole = browser.get("/audit.csv").get_data(as_text=True)
    assert "audit.exported" in whole
    last = json.loads(audit_events(world.db, action="audit.exported")[-1]["record"])
    assert last["new"]["filters"] == {}


def test_csv_cell_quotes_formulas(app) -> None:
    from gmp_mes.pages import _cell

    assert _cell("=1+2") == "'=1+2" and _cell("@SUM") == "'@SUM" and _cell("ok") == "ok"
    assert _cell(None) == "" and _cell(-3) == "'-3"


def test_batches_and_alerts_page(world: World, client) -> None:
    with world.db.transaction(actor=Actor.system("test")) as s:
        for n in range(3):
            raise_alert(s, AlertSpec(
                cause=f"test:{n}", kind="expired", severity="major", subject_type="item",
                subject_id=f"ITM-PAGE000{n}", message=f"alert {n}", roles=("operator",),
                site_code=PLANT))
    browser = Browser(client, world.operator)
    first = browser.get("/alerts?size=2").get_data(as_text=True)
    assert first.count('class="alert-row') == 2 and "Next page" in first
    second = browser.get("/alerts?size=2&page=2").get_data(as_text=True)
    assert second.count('class="alert-row') == 1 and "Previous page" in second
    batches = browser.get("/batches?size=2")
    assert batches.status_code == 200


def test_custody_trail_pages_in_the_api_and_on_the_item_page(world: World, client,
                                                              login) -> None:
    from gmp_mes.models import User
    from identity import services

    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="released", batch_number="B-1")
    with world.app.app_context(), world.tx(world.operator) as s:
        user = s.get(User, world.operator.user_id)
        for n in range(12):
            services.record_custody(s, bag, action="move", site=PLANT, user=user,
                                    location=f"shelf {n}")
    api = login(world.operator)
    first = api.get(f"/api/v1/items/{bag}?custody_limit=5").get_json()
    assert len(first["custody"]) == 5 and first["custody_older"]
    assert first["custody"][-1]["location"] == "shelf 11"  # the newest page, oldest first
    seen = [e["id"] for e in first["custody"]]
    cursor = first["custody_older"]
    while cursor:
        page = api.get(f"/api/v1/items/{bag}?custody_limit=5&custody_before={cursor}").get_json()
        seen = [e["id"] for e in page["custody"]] + seen
        cursor = page["custody_older"]
    everything = api.get(f"/api/v1/items/{bag}?custody_limit=5000").get_json()["custody"]
    assert seen == [e["id"] for e in everything] and len(seen) == 13  # create + 12 moves
    assert_problem(api.get(f"/api/v1/items/{bag}?custody_limit=0"), 422)
    browser = Browser(client, world.operator)
    html = browser.get(f"/items/{bag}").get_data(as_text=True)
    assert "shelf 11" in html and "Older events" not in html  # 13 < one page of 100


def test_custody_detail_is_words_not_json() -> None:
    import json

    from identity.pages import custody_detail

    text = json.dumps({"reasons": [{"code": "expired", "message": "the item expired"}],
                       "batch_number": "CART-26-0001"})
    assert custody_detail(text) == "the item expired; checked against batch CART-26-0001"
    assert "{" not in custody_detail(json.dumps({"reasons": []})) and custody_detail(None) == ""


def test_audit_api_pages_by_key_too(world: World, login) -> None:
    _events(world, 5)
    api = login(world.qa)
    first = api.get("/api/v1/audit?entity_type=thing&limit=2").get_json()
    assert [e["entity_id"] for e in first] == ["T0004", "T0003"]
    older = api.get(f"/api/v1/audit?entity_type=thing&limit=2&before={first[-1]['seq']}")
    assert [e["entity_id"] for e in older.get_json()] == ["T0002", "T0001"]
    only = api.get("/api/v1/audit?action=test_event&limit=1000").get_json()
    assert len(only) == 5
