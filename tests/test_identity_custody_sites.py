"""Custody bound to place and person (issue 13, SPEC §7 POST /items/{id}/custody): every
action is recorded at the caller's own site only; ``move`` changes the location inside the
item's site, never the site; ``receive`` only at the shipment's destination, by a user of
that site; ``thaw`` only where the item is, by a user of that site; a handover names a
user of the same site. Each refusal is a 403/409 problem with its code, and writes
nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmp_mes.clock import utcnow
from gmp_mes.errors import DomainError
from tests.conftest import sig
from tests.helpers import assert_problem, count
from tests.test_identity_fixtures import (  # noqa: F401
    OTHER_TREATMENT,
    PLANT,
    TREATMENT,
    World,
    world_fixture,
)


@pytest.fixture
def ward(world: World, make_user) -> dict[str, Any]:
    """A released bag at the plant and the people of three sites."""
    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="released", post_thaw_window="PT3H",
                     expires_at=utcnow() + timedelta(days=30))
    return {
        "patient": patient, "bag": bag,
        "operator2": make_user("oskar", "operator", site=PLANT),
        "nurse": make_user("nora", "clinician", site=TREATMENT),
        "stranger": make_user("sven", "clinician", site=OTHER_TREATMENT),
    }


def post(api: Any, bag: str, **body: Any) -> Any:
    return api.post(f"/api/v1/items/{bag}/custody", json=body)


def call(api: Any, bag: str, **body: Any) -> Callable[[], Any]:
    """The custody request, to be sent by ``refused`` (the client is logged in first)."""
    return lambda: post(api, bag, **body)


def refused(world: World, call: Callable[[], Any], status: int, code: str) -> dict[str, Any]:
    """The refusal, and nothing written: no custody event, no audit event."""
    before = (count(world.db, "custody_event"), count(world.db, "audit_event"))
    problem = assert_problem(call(), status, code)
    assert (count(world.db, "custody_event"), count(world.db, "audit_event")) == before
    return problem


def deliver(world: World, login, ward: dict[str, Any]) -> None:
    bag = ward["bag"]
    assert post(login(world.operator), bag, action="ship", site=TREATMENT).status_code == 201
    assert post(login(world.clinician), bag, action="receive", site=TREATMENT,
                location="Pharmacy LN2").status_code == 201


@pytest.mark.requirement("SPEC §7 (custody)")
def test_move_changes_the_location_never_the_site(world: World, login, ward) -> None:
    bag, op = ward["bag"], login(world.operator)
    before = count(world.db, "custody_event")
    problem = refused(world, lambda: post(op, bag, action="move", site=TREATMENT, location="Ward"),
                      409, "move_changes_site")
    assert "ship it and receive it there" in problem["detail"]
    assert count(world.db, "custody_event") == before
    assert world.get(bag).site_code == PLANT
    moved = post(op, bag, action="move", site=PLANT, location="LN2 tank 2, rack 4")
    assert moved.status_code == 201, moved.get_json()
    assert moved.get_json()["site_code"] == PLANT
    assert (world.get(bag).site_code, world.get(bag).location) == (PLANT, "LN2 tank 2, rack 4")


@pytest.mark.requirement("SPEC §7 (custody)")
def test_move_by_a_user_of_another_site_is_refused(world: World, login, ward) -> None:
    refused(world, call(login(ward["stranger"]), ward["bag"], action="move", site=PLANT,
                        location="mine now"), 403, "site_mismatch")
    assert world.get(ward["bag"]).location is None


@pytest.mark.requirement("SPEC §7 (custody)")
def test_ship_is_recorded_by_a_user_of_the_site_it_leaves(world: World, login, ward) -> None:
    problem = refused(world, call(login(world.clinician), ward["bag"], action="ship",
                                  site=TREATMENT), 403, "site_mismatch")
    assert PLANT in problem["detail"]
    assert world.get(ward["bag"]).status == "released"


@pytest.mark.requirement("SPEC §7 (custody)")
def test_receive_only_at_the_destination_by_a_user_of_that_site(world: World, login,
                                                                ward) -> None:
    bag = ward["bag"]
    assert post(login(world.operator), bag, action="ship", site=TREATMENT).status_code == 201
    # The plant cannot record the receipt at the hospital.
    refused(world, call(login(world.operator), bag, action="receive", site=TREATMENT),
            403, "site_mismatch")
    # Another hospital cannot receive a bag shipped to the first one (QA is alerted).
    assert_problem(post(login(ward["stranger"]), bag, action="receive",
                        site=OTHER_TREATMENT), 409, "wrong_destination")
    assert count(world.db, "alert") == 1
    assert world.get(bag).status == "shipped"
    received = post(login(world.clinician), bag, action="receive", site=TREATMENT)
    assert received.status_code == 201 and received.get_json()["site_code"] == TREATMENT
    assert world.get(bag).site_code == TREATMENT


@pytest.mark.requirement("SPEC §7 (custody)")
def test_nothing_moves_while_in_transit(world: World, login, ward) -> None:
    bag = ward["bag"]
    assert post(login(world.operator), bag, action="ship", site=TREATMENT).status_code == 201
    for action in ("move", "handover", "thaw"):
        refused(world, call(login(world.operator), bag, action=action, site=PLANT),
                409, "in_transit")


@pytest.mark.requirement("SPEC §7 (custody)")
def test_thaw_only_where_the_item_is_by_a_user_of_that_site(world: World, login,
                                                           ward) -> None:
    bag = ward["bag"]
    deliver(world, login, ward)
    # A QC analyst in the cleanroom cannot thaw a bag at the hospital ...
    analyst = login(ward["operator2"])
    refused(world, lambda: post(analyst, bag, action="thaw", site=PLANT), 409, "not_at_site")
    refused(world, lambda: post(analyst, bag, action="thaw", site=TREATMENT), 403, "site_mismatch")
    # ... nor a clinician of another hospital.
    refused(world, call(login(ward["stranger"]), bag, action="thaw", site=TREATMENT),
            403, "site_mismatch")
    assert world.get(bag).thawed_at is None
    thawed = post(login(ward["nurse"]), bag, action="thaw", site=TREATMENT)
    assert thawed.status_code == 201 and world.get(bag).status == "thawed"


@pytest.mark.requirement("SPEC §7 (custody)")
def test_handover_names_a_user_of_the_same_site(world: World, login, ward) -> None:
    bag, op = ward["bag"], login(world.operator)
    refused(world, lambda: post(op, bag, action="handover", site=PLANT, to_user="nora"), 409,
            "handover_other_site")
    assert_problem(post(op, bag, action="handover", site=PLANT, to_user="nobody"), 422)
    refused(world, call(login(ward["stranger"]), bag, action="handover", site=PLANT),
            403, "site_mismatch")
    refused(world, lambda: post(op, bag, action="handover", site=TREATMENT), 409, "not_at_site")
    done = post(op, bag, action="handover", site=PLANT, to_user="OSKAR")
    assert done.status_code == 201, done.get_json()
    assert done.get_json()["detail"]["to_user"] == "oskar"
    assert world.get(bag).custodian == ward["operator2"].user_id
    # Without a name, the caller takes custody.
    assert post(op, bag, action="handover", site=PLANT).status_code == 201
    assert world.get(bag).custodian == world.operator.user_id


def test_an_admin_account_records_no_custody_even_in_the_service(world: World,
                                                                 make_user) -> None:
    from gmp_mes.models import User
    from identity import services

    admin = make_user("root", "admin", site=PLANT)
    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="released")
    with pytest.raises(DomainError) as caught, world.app.app_context(), world.tx(admin) as s:
        services.record_custody(s, bag, action="move", site=PLANT,
                                user=s.get(User, admin.user_id), location="x")
    assert (caught.value.status, caught.value.code) == (403, "forbidden_role")


@pytest.mark.requirement("SPEC §6")
def test_a_clinician_of_another_site_can_neither_move_nor_administer(
    world: World, login, ward
) -> None:
    bag, stranger = ward["bag"], login(ward["stranger"])
    deliver(world, login, ward)
    before = count(world.db, "custody_event")
    # Moving the bag to their own hospital, by any action: refused.
    refused(world, lambda: post(stranger, bag, action="move", site=OTHER_TREATMENT), 409,
            "move_changes_site")
    refused(world, lambda: post(stranger, bag, action="move", site=TREATMENT), 403, "site_mismatch")
    refused(world, lambda: post(stranger, bag, action="handover", site=TREATMENT), 403,
            "site_mismatch")
    refused(world, lambda: post(stranger, bag, action="receive", site=OTHER_TREATMENT), 409,
            "invalid_transition")
    assert count(world.db, "custody_event") == before
    # At their bedside: no match, the bag is not at their site; administration refused.
    payloads = {"patient_payload": world.payload(ward["patient"]["wristband_item_id"]),
                "product_payload": world.payload(bag)}
    verdict = stranger.post("/api/v1/bedside/verify", json=payloads).get_json()
    assert verdict["match"] is False
    assert [r["code"] for r in verdict["reasons"]] == ["wrong_site"]
    # The refused administration records its verdict (audited), and no custody event.
    assert_problem(stranger.post("/api/v1/administrations",
                                 json={**payloads, "signature": sig("administered")}),
                   409, "bedside_mismatch")
    assert count(world.db, "custody_event") == before
    assert world.get(bag).status == "received"
    # The treating site's own clinician: MATCH.
    assert login(world.clinician).post("/api/v1/bedside/verify",
                                       json=payloads).get_json()["match"] is True


ACTIONS = ("handover", "move", "ship", "receive", "thaw")
SITES = (PLANT, TREATMENT, OTHER_TREATMENT)


@pytest.mark.requirement("SPEC §7 (custody)")
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attempts=st.lists(st.tuples(st.sampled_from(("op", "nurse", "stranger")),
                                   st.sampled_from(ACTIONS), st.sampled_from(SITES)),
                         min_size=1, max_size=8))
def test_every_recorded_custody_event_is_at_its_recorders_site(
    world: World, ward, attempts: list[tuple[str, str, str]]
) -> None:
    """Whatever anyone tries: each event written is at the recorder's own site, and the
    item's site changes only by a receipt at the shipment's destination."""
    from gmp_mes.models import User
    from identity import services

    people = {"op": world.operator, "nurse": ward["nurse"], "stranger": ward["stranger"]}
    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="released",
                     expires_at=utcnow() + timedelta(days=30))
    for who, action, site in attempts:
        person = people[who]
        before = world.get(bag)
        try:
            with world.app.app_context(), world.tx(person) as s:
                event = services.record_custody(s, bag, action=action, site=site,
                                                user=s.get(User, person.user_id))
                recorded = (event.action, event.site_code, event.destination_site)
        except DomainError as exc:
            assert exc.status in (403, 409, 422), exc
            assert world.get(bag).site_code == before.site_code
            continue
        after = world.get(bag)
        assert recorded[1] == person.site  # recorded at the caller's own site
        if after.site_code != before.site_code:
            assert action == "receive" and before.ship_to == after.site_code == site
