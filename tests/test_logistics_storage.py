"""Storage positions (SPEC §14): units SITE/FREEZER/RACK/BOX with numbered positions;
custody ``move`` and ``receive`` carry ``position``; one item per position (409
``position_occupied``); moving out frees it; the item shows where it is."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.helpers import assert_problem, count
from tests.test_identity_fixtures import (  # noqa: F401
    PLANT,
    TREATMENT,
    World,
    world_fixture,
)
from tests.test_identity_pages import Browser
from tests.test_logistics_shipments import trail_matches_rows

BOX = f"{PLANT}/LN2-1/R3/B2"


@pytest.fixture
def storage(world: World, login: Any, make_user: Any) -> dict[str, Any]:
    from gmp_mes.clock import utcnow

    admin = login(make_user("ada", "admin", site=PLANT))
    created = admin.post("/api/v1/storage", json={
        "code": BOX.lower(), "positions": 3, "condition": {"min_c": -196, "max_c": -150}})
    assert created.status_code == 201, created.get_json()
    patient = world.enrol()
    bags = [world.item(patient["coi_id"], status="released",
                       expires_at=utcnow() + timedelta(days=30)) for _ in range(2)]
    return {"admin": admin, "bags": bags, "op": login(world.operator)}


def custody(api: Any, item_id: str, **body: Any) -> Any:
    return api.post(f"/api/v1/items/{item_id}/custody", json=body)


@pytest.mark.requirement("EU GMP Part IV 6.5")
@pytest.mark.requirement("SPEC §14")
def test_one_item_per_position_and_moving_out_frees_it(storage: dict[str, Any],
                                                       world: World) -> None:
    op, (first, second) = storage["op"], storage["bags"]
    placed = custody(op, first, action="move", site=PLANT, position=f"{BOX}:2")
    assert placed.status_code == 201, placed.get_json()
    assert placed.get_json()["location"] == f"{BOX}:2"
    assert world.get(first).location == f"{BOX}:2"  # the item shows where it is
    before = count(world.db, "custody_event")
    taken = assert_problem(custody(op, second, action="move", site=PLANT,
                                   position=f"{BOX}:2"), 409, "position_occupied")
    assert taken["item_id"] == first and count(world.db, "custody_event") == before
    occupancy = op.get(f"/api/v1/storage/{BOX}").get_json()
    assert occupancy["occupancy"] == {"2": first} and occupancy["free"] == 2
    # Moving within storage frees the old position; moving out frees it too.
    assert custody(op, first, action="move", site=PLANT, position=f"{BOX}:3").status_code == 201
    assert op.get(f"/api/v1/storage/{BOX}").get_json()["occupancy"] == {"3": first}
    assert custody(op, second, action="move", site=PLANT, position=f"{BOX}:2").status_code == 201
    assert custody(op, first, action="move", site=PLANT, location="QC bench").status_code == 201
    assert op.get(f"/api/v1/storage/{BOX}").get_json()["occupancy"] == {"2": second}
    assert custody(op, second, action="ship", site=TREATMENT).status_code == 201
    assert op.get(f"/api/v1/storage/{BOX}").get_json()["occupancy"] == {}
    trail_matches_rows(world)


def test_positions_that_do_not_exist_are_refused(storage: dict[str, Any],
                                                 login: Any, world: World) -> None:
    op, bag = storage["op"], storage["bags"][0]
    for position, status in ((f"{BOX}:4", 422), (f"{BOX}:0", 422), ("nowhere", 422),
                             (f"{PLANT}/LN2-9/R1/B1:1", 404)):
        assert_problem(custody(op, bag, action="move", site=PLANT, position=position), status)
    assert_problem(custody(op, bag, action="thaw", site=PLANT, position=f"{BOX}:1"), 422)
    admin = storage["admin"]
    assert_problem(admin.post("/api/v1/storage", json={
        "code": BOX, "positions": 3, "condition": {"min_c": -196, "max_c": -150}}),
        409, "already_exists")
    assert_problem(admin.post("/api/v1/storage", json={
        "code": "NOSITE/A/B/C", "positions": 3, "condition": {"min_c": -196, "max_c": -150}}),
        422)
    assert_problem(login(world.operator).post("/api/v1/storage", json={
        "code": "CLEAN1/A/B/C", "positions": 3,
        "condition": {"min_c": -196, "max_c": -150}}), 403)


def test_receive_into_a_position_at_the_destination(storage: dict[str, Any], world: World,
                                                    login: Any, make_user: Any) -> None:
    hospital_box = f"{TREATMENT}/LN2-A/R1/B1"
    assert storage["admin"].post("/api/v1/storage", json={
        "code": hospital_box, "positions": 2,
        "condition": {"min_c": -196, "max_c": -150}}).status_code == 201
    bag = storage["bags"][0]
    assert custody(storage["op"], bag, action="move", site=PLANT,
                   position=f"{BOX}:1").status_code == 201
    assert custody(storage["op"], bag, action="ship", site=TREATMENT).status_code == 201
    doc = login(world.clinician)
    assert_problem(custody(doc, bag, action="receive", site=TREATMENT,
                           position=f"{BOX}:1"), 409, "position_other_site")
    received = custody(doc, bag, action="receive", site=TREATMENT,
                       position=f"{hospital_box}:2")
    assert received.status_code == 201, received.get_json()
    assert doc.get(f"/api/v1/storage/{hospital_box}").get_json()["occupancy"] == {"2": bag}
    assert doc.get(f"/api/v1/storage/{BOX}").get_json()["occupancy"] == {}


def test_storage_page_shows_occupancy(storage: dict[str, Any], world: World,
                                      client: Any, make_user: Any) -> None:
    bag = storage["bags"][0]
    assert custody(storage["op"], bag, action="move", site=PLANT,
                   position=f"{BOX}:1").status_code == 201
    page = Browser(client, world.operator).get("/storage").get_data(as_text=True)
    assert f"{BOX}:1" in page and bag in page and "1 of 3 positions occupied" in page
    item_page = Browser(client, world.operator).get(f"/items/{bag}").get_data(as_text=True)
    assert f"{BOX}:1" in item_page


def test_admin_creates_a_unit_on_the_page(world: World, client: Any, make_user: Any) -> None:
    admin = make_user("adam", "admin", site=PLANT)
    browser = Browser(client, admin)
    refused = browser.post("/storage", {"code": "CLEAN1/LN2-2/R1/B1", "positions": "5",
                                        "min_c": "-150", "max_c": "-196"})
    assert refused.status_code == 422
    text = refused.get_data(as_text=True)
    assert "Nothing was saved" in text and 'value="CLEAN1/LN2-2/R1/B1"' in text
    created = browser.post_follow("/storage", {"code": "CLEAN1/LN2-2/R1/B1", "positions": "5",
                                               "min_c": "-196", "max_c": "-150"})
    assert "0 of 5 positions occupied" in created.get_data(as_text=True)


def test_concurrent_moves_into_one_position_place_one_item(storage: dict[str, Any],
                                                           world: World, app: Any,
                                                           login: Any) -> None:
    """Four bags sent to the same position at once: exactly one is placed, the others
    are refused 409 position_occupied (the unit's row lock; the partial unique index
    behind it)."""
    import threading

    from gmp_mes.clock import utcnow
    from tests.conftest import ApiClient

    patient = world.enrol()
    bags = storage["bags"] + [world.item(patient["coi_id"], status="released",
                                         expires_at=utcnow() + timedelta(days=30))
                              for _ in range(2)]
    token = storage["op"].token
    barrier = threading.Barrier(len(bags))
    answers: list[Any] = [None] * len(bags)

    def move(n: int) -> None:
        api = ApiClient(app.test_client(), token)
        barrier.wait()
        response = custody(api, bags[n], action="move", site=PLANT, position=f"{BOX}:1")
        answers[n] = (response.status_code, response.get_json().get("code"))

    threads = [threading.Thread(target=move, args=(n,)) for n in range(len(bags))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(status for status, _ in answers) == [201, 409, 409, 409], answers
    assert {code for status, code in answers if status == 409} == {"position_occupied"}
    occupancy = storage["op"].get(f"/api/v1/storage/{BOX}").get_json()["occupancy"]
    assert list(occupancy) == ["1"]
