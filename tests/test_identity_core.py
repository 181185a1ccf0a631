"""COI IDs, enrolment, collections, items, genealogy and the item state machine."""

from __future__ import annotations

import threading
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gmp_mes.audit import Actor
from gmp_mes.clock import clock, utcnow
from gmp_mes.errors import CoiMismatch, DomainError, InvalidTransition, ValidationFailed
from identity import coi, services
from tests.test_identity_fixtures import APHERESIS, PLANT, TREATMENT, World, world_fixture  # noqa: F401

ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# --- check character (pure) --------------------------------------------------------------

@pytest.mark.requirement("ISBT 128 ST-001 Appendix A")
@pytest.mark.parametrize(("data", "check"), [
    ("G123417654321", "A"), ("A999921123456", "3"), ("A999818123456", "N"),
    ("W000009123456", "G"), ("A999917345628", "*"),
])
def test_mod37_2_vectors(data: str, check: str) -> None:
    assert coi.check_character(data) == check
    assert coi.is_valid_check(data + check)


coi_bodies = st.builds(
    lambda fin, year, seq: f"{fin}{year:02d}{seq}",
    st.from_regex(r"[A-Z][0-9A-Z]{4}", fullmatch=True),
    st.integers(0, 99),
    st.text(alphabet=ALNUM, min_size=6, max_size=6),
)


@pytest.mark.requirement("ISBT 128 ST-001 Appendix A")
@settings(max_examples=60, deadline=None)
@given(coi_bodies)
def test_every_substitution_and_adjacent_transposition_is_detected(body: str) -> None:
    full = body + coi.check_character(body)
    assert coi.coi_problem(full) is None
    # Substitutions, including of the check character itself (by any of the 37 symbols).
    for i, original in enumerate(full):
        alphabet = coi.CHECK_ALPHABET if i == len(full) - 1 else ALNUM
        for other in alphabet:
            if other != original:
                changed = full[:i] + other + full[i + 1:]
                assert not coi.is_valid_check(changed), (full, changed)
    for i in range(len(full) - 1):
        if full[i] != full[i + 1]:
            swapped = full[:i] + full[i + 1] + full[i] + full[i + 2:]
            assert not coi.is_valid_check(swapped), (full, swapped)


def test_coi_format_and_label_text() -> None:
    value = coi.make_coi("A9999", 2026, 1)
    assert value[:13] == "A999926000001" and len(value) == 14
    assert coi.format_for_label(value) == ("A9999 26 000001", value[13])
    assert coi.coi_problem("A99992600000") is not None
    assert coi.coi_problem(value.lower()) is not None
    with pytest.raises(ValueError):
        coi.make_coi("9AAAA", 2026, 1)


def test_din_validation() -> None:
    din = "A999921123456" + "3"
    assert coi.din_problem(din) is None
    assert "check character" in coi.din_problem("A9999211234564")
    assert coi.din_problem("A99992112345") is not None
    assert coi.din_problem("A99992112345A3") is not None  # sequence is numeric


# --- enrolment ---------------------------------------------------------------------------

def test_enrolment_assigns_coi_and_wristband(world: World) -> None:
    clock.freeze(utcnow().replace(year=2026))
    enrolled = world.enrol("MRN-1")
    assert enrolled["coi_id"].startswith("A999926")
    assert coi.coi_problem(enrolled["coi_id"]) is None
    wristband = world.get(enrolled["wristband_item_id"])
    assert wristband.kind == "wristband" and wristband.status == "available"
    assert wristband.coi_id == enrolled["coi_id"] and wristband.site_code == TREATMENT
    second = world.enrol("MRN-2")
    assert int(second["coi_id"][7:13]) == int(enrolled["coi_id"][7:13]) + 1


def test_duplicate_mrn_at_same_site_is_refused_naming_the_coi(world: World) -> None:
    first = world.enrol("MRN-7")
    with pytest.raises(DomainError) as caught:
        world.enrol("mrn-7 ")
    assert caught.value.code == "already_enrolled"
    assert caught.value.extra["coi_id"] == first["coi_id"]
    assert first["coi_id"] in caught.value.detail
    # The same MRN at another hospital is another person.
    assert world.enrol("MRN-7", site="HOSP2")["coi_id"] != first["coi_id"]


def test_enrolment_field_errors(world: World) -> None:
    with pytest.raises(ValidationFailed) as caught:
        world.enrol("MRN-9", site=PLANT, given_name=" ",
                    date_of_birth=utcnow().date() + timedelta(days=2))
    assert set(caught.value.errors) == {"given_name", "date_of_birth", "treatment_site"}


def test_concurrent_enrolments_never_share_a_coi(world: World) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def enrol(n: int) -> None:
        try:
            results.append(world.enrol(f"CONC-{n}")["coi_id"])
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=enrol, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 6


# --- collections -------------------------------------------------------------------------

def test_collection_creates_starting_material_with_hold_time(world: World) -> None:
    patient = world.enrol()
    collected = utcnow().replace(microsecond=0) - timedelta(hours=5)
    item_id = world.collect(patient["coi_id"], collected_at=collected, din="A999921123456" + "3")
    item = world.get(item_id)
    assert item.kind == "starting_material" and item.status == "available"
    assert item.coi_id == patient["coi_id"] and item.site_code == APHERESIS
    assert item.expires_at == collected + timedelta(hours=48)  # CART-AUTO: PT48H
    assert item.expiry_warnings == "PT24H,PT4H"


@pytest.mark.parametrize(("field", "kw"), [
    ("collected_at", {"collected_at": utcnow() + timedelta(hours=1)}),
    ("din", {"din": "A9999211234564"}),
    ("volume_ml", {"volume_ml": 0}),
    ("site", {"site": "NOWHERE"}),
])
def test_collection_field_errors(world: World, field: str, kw: dict) -> None:
    patient = world.enrol()
    with pytest.raises(ValidationFailed) as caught:
        world.collect(patient["coi_id"], **kw)
    assert field in caught.value.errors


def test_collection_for_mistyped_coi_is_a_field_error(world: World) -> None:
    patient = world.enrol()
    wrong = patient["coi_id"][:-1] + ("0" if patient["coi_id"][-1] != "0" else "1")
    with pytest.raises(ValidationFailed) as caught:
        world.collect(wrong)
    assert "coi_id" in caught.value.errors


# --- items, genealogy, autologous rule ----------------------------------------------------

@pytest.mark.requirement("autologous rule")
def test_parent_of_another_patient_is_refused_by_the_service(world: World) -> None:
    a, b = world.enrol(), world.enrol()
    sm_a = world.collect(a["coi_id"])
    with pytest.raises(CoiMismatch):
        world.item(b["coi_id"], status="quarantine", parents=(sm_a,))
    child = world.item(a["coi_id"], status="quarantine", parents=(sm_a,))
    with world.tx() as s:
        assert services.parents_of(s, child) == [sm_a]
        assert services.genealogy(s, sm_a)["descendants"] == [child]
        assert services.genealogy(s, child)["ancestors"] == [sm_a]


@pytest.mark.requirement("autologous rule")
def test_parent_of_another_patient_is_refused_by_the_database(world: World) -> None:
    a, b = world.enrol(), world.enrol()
    sm_a = world.collect(a["coi_id"])
    fp_b = world.item(b["coi_id"], status="quarantine")
    with pytest.raises(DBAPIError), world.db.engine.begin() as c:
        c.execute(text("INSERT INTO item_parent (item_id, parent_id) VALUES (:i, :p)"),
                  {"i": fp_b, "p": sm_a})
    with pytest.raises(DBAPIError), world.db.engine.begin() as c:
        c.execute(text("UPDATE item SET coi_id = :c WHERE item_id = :i"),
                  {"c": b["coi_id"], "i": sm_a})
    # A same-COI link through raw SQL is accepted: the trigger is not a blanket refusal.
    fp_a = world.item(a["coi_id"], status="quarantine")
    with world.db.engine.begin() as c:
        c.execute(text("INSERT INTO item_parent (item_id, parent_id) VALUES (:i, :p)"),
                  {"i": fp_a, "p": sm_a})


@pytest.mark.requirement("EU GMP Annex 11 §9")
def test_items_are_never_deleted_and_custody_is_append_only(world: World) -> None:
    a = world.enrol()
    sm = world.collect(a["coi_id"])
    for sql in ("DELETE FROM item WHERE item_id = :i",
                "UPDATE custody_event SET site_code = 'X' WHERE item_id = :i",
                "DELETE FROM custody_event WHERE item_id = :i"):
        with pytest.raises(DBAPIError), world.db.engine.begin() as c:
            c.execute(text(sql), {"i": sm})


def test_state_machine(world: World) -> None:
    a = world.enrol()
    bag = world.item(a["coi_id"], status="quarantine", batch_number="B-1")
    with pytest.raises(InvalidTransition):
        world.set_status(bag, "shipped")
    with pytest.raises(InvalidTransition):
        world.set_status(bag, "thawed")
    world.set_status(bag, "released", "shipped", "received", "thawed", "administered")
    assert world.get(bag).status == "administered"
    for target in ("destroyed", "expired", "released"):
        with pytest.raises(InvalidTransition):
            world.set_status(bag, target)
    wristband = world.get(a["wristband_item_id"])
    with pytest.raises(InvalidTransition):
        world.set_status(wristband.item_id, "released")
    with world.tx() as s:
        assert [i.item_id for i in services.items_of_batch(s, "B-1")] == [bag]


def test_transition_is_audited_with_reason(world: World) -> None:
    from tests.helpers import audit_events

    a = world.enrol()
    bag = world.item(a["coi_id"], status="quarantine")
    with world.app.app_context(), world.tx(world.qa) as s:
        services.transition_item(s, bag, "rejected", reason="sterility failed")
    updates = [e for e in audit_events(world.db, entity_type="item", entity_id=bag)
               if e["action"] == "update"]
    assert updates[-1]["reason"] == "sterility failed"


def test_label_data(world: World) -> None:
    a = world.enrol(given_name="Grace", family_name="Hopper",
                    date_of_birth=date(1966, 12, 9))
    expires = utcnow().replace(microsecond=0) + timedelta(days=270)
    bag = world.item(a["coi_id"], status="quarantine", batch_number="B-9",
                     expires_at=expires, expiry_warnings=("PT24H",), post_thaw_window="PT3H")
    world.set_status(bag, "conditionally_released")
    with world.db.transaction(actor=Actor.system("test")) as s:
        data = services.label_data(s, bag)
    assert data["patient_name"] == "HOPPER, Grace"
    assert data["date_of_birth"] == date(1966, 12, 9)
    assert data["kind_code"] == "FP" and data["coi_id"] == a["coi_id"]
    assert data["expires_at"] == expires and data["conditional"] is True
    assert data["site_code"] == PLANT and data["site_timezone"] == "Europe/Paris"
    assert "-150" in data["storage"] and data["batch_number"] == "B-9"
    assert services.KIND_CODES["wristband"] == "WB" and services.CODE_KINDS["SM"] == \
        "starting_material"


def test_create_item_validates(world: World) -> None:
    a = world.enrol()
    with pytest.raises(ValidationFailed):
        world.item(a["coi_id"], kind="pooled")
    with pytest.raises(ValidationFailed):
        world.item(a["coi_id"], status="administered", kind="wristband")
    with pytest.raises(ValidationFailed):
        world.item(a["coi_id"], expiry_warnings=("soon",))
    with pytest.raises(DomainError):
        world.item("A9999260000990")


@settings(max_examples=80, deadline=None)
@given(kind=st.sampled_from([k.value for k in services.ItemKind]),
       walk=st.lists(st.sampled_from([s.value for s in services.ItemStatus]), max_size=25))
def test_state_machine_invariants(kind: str, walk: list[str]) -> None:
    """Random walks: an item stays within its kind's statuses and a final status is final."""
    from identity.models import Item

    start = sorted(services.KIND_STATUSES[kind] - services.FINAL_STATUSES)[0]
    item = Item(item_id="ITM-TEST0000", kind=kind, status=start)
    for target in walk:
        was_final = item.status in services.FINAL_STATUSES
        if services.can_transition(item, target):
            assert not was_final
            item.status = target
        assert item.status in services.KIND_STATUSES[kind]
    if kind == "final_product":
        path = ["quarantine", "released", "shipped", "received", "thawed", "administered"]
        bag = Item(item_id="ITM-TEST0001", kind=kind, status=path[0])
        for target in path[1:]:
            assert services.can_transition(bag, target)
            bag.status = target


def test_concurrent_shipments_of_one_item_yield_exactly_one(world: World) -> None:
    from gmp_mes.models import User

    a = world.enrol()
    bag = world.item(a["coi_id"], status="released")
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def ship() -> None:
        barrier.wait()
        try:
            with world.app.app_context(), world.tx(world.operator) as s:
                user = s.get(User, world.operator.user_id)
                services.record_custody(s, bag, action="ship", site=TREATMENT, user=user)
            outcomes.append("shipped")
        except DomainError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=ship) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["invalid_transition"] * 3 + ["shipped"]
    with world.tx() as s:
        ships = [e for e in services.custody_trail(s, bag) if e.action == "ship"]
    assert len(ships) == 1



def test_items_to_handle_put_the_post_thaw_deadline_first(world) -> None:
    """A thawed bag's post-thaw window, not its shelf life, is the countdown that matters."""
    from datetime import timedelta

    from gmp_mes.clock import clock, utcnow
    from identity import services

    now = utcnow()
    clock.freeze(now)
    coi_id = world.enrol()["coi_id"]
    soon = world.item(coi_id, status="received", site="HOSP1",
                      expires_at=now + timedelta(days=10), post_thaw_window="PT3H")
    thawed = world.item(coi_id, status="received", site="HOSP1",
                        expires_at=now + timedelta(days=200), post_thaw_window="PT3H")
    world.set_status(thawed, "thawed")
    with world.tx() as s:
        item = services.get_item(s, thawed)
        item.thawed_at = now
        ranked = services.items_to_handle(s, "HOSP1")
        deadlines = {item.item_id: deadline for item, deadline in ranked}
    order = [item_id for item_id in deadlines if item_id in (soon, thawed)]
    assert order == [thawed, soon]
    assert deadlines[thawed] == now + timedelta(hours=3)


def test_custody_actions_come_from_the_service(world, make_user) -> None:
    """The item page offers the actions the service states: none for a final item or an
    admin-only account, all five otherwise."""
    from gmp_mes.models import User
    from identity import services

    coi_id = world.enrol()["coi_id"]
    live = world.item(coi_id, status="released")
    gone = world.item(coi_id, status="released")
    world.set_status(gone, "destroyed")
    admin = make_user("adm2", "admin")
    with world.tx() as s:
        operator, admin = s.get(User, world.operator.user_id), s.get(User, admin.user_id)
        assert services.custody_actions_for(services.get_item(s, live), operator) == (
            "handover", "move", "ship", "receive", "thaw")
        assert services.custody_actions_for(services.get_item(s, gone), operator) == ()
        assert services.custody_actions_for(services.get_item(s, live), admin) == ()
        assert services.custody_actions_for(services.get_item(s, live), None) == ()
