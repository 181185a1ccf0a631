"""Shipments through the API (SPEC §14): all-or-none shipping, the temperature log,
receipt with reconciliation, the hold an excursion or a missing log puts on the items
(the bedside refuses them), QA's signed disposition, the batch record section."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gmp_mes.clock import utcnow
from tests.conftest import sig
from tests.helpers import assert_problem, audit_events, count
from tests.test_identity_fixtures import (  # noqa: F401
    PLANT,
    TREATMENT,
    World,
    world_fixture,
)

COLD = {"min_c": -196.0, "max_c": -150.0}


def log_csv(temps: list[float], start: datetime | None = None) -> str:
    start = start or datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    return "timestamp,temperature_c\n" + "".join(
        f"{(start + timedelta(minutes=i)).isoformat()},{c}\n" for i, c in enumerate(temps))


class Route:
    """Bags of one patient at the plant, shipped to the hospital and received there."""

    def __init__(self, world: World, login: Any, bags: int = 2) -> None:
        self.world, self.login = world, login
        self.patient = world.enrol()
        self.bags = [world.item(self.patient["coi_id"], status="released",
                                expires_at=utcnow() + timedelta(days=30))
                     for _ in range(bags)]
        self.op, self.doc, self.qa = login(world.operator), login(world.clinician), \
            login(world.qa)

    def ship(self, items: list[str] | None = None, **extra: Any) -> Any:
        return self.op.post("/api/v1/shipments", json={
            "items": items or self.bags, "from_site": PLANT, "to_site": TREATMENT,
            "condition": COLD, **extra})

    def shipped(self, **extra: Any) -> str:
        response = self.ship(**extra)
        assert response.status_code == 201, response.get_json()
        return response.get_json()["shipment_id"]

    def upload(self, shipment_id: str, text: str) -> Any:
        return self.op.post(f"/api/v1/shipments/{shipment_id}/temperature-log",
                            data=text, content_type="text/csv", json=None)

    def receive(self, shipment_id: str, items: list[str] | None = None,
                extra_payloads: tuple[str, ...] = ()) -> Any:
        payloads = [self.world.payload(i) for i in (items if items is not None else self.bags)]
        return self.doc.post(f"/api/v1/shipments/{shipment_id}/receive", json={
            "site": TREATMENT, "payloads": payloads + list(extra_payloads),
            "location": "Pharmacy LN2"})

    def bedside(self, bag: str) -> dict[str, Any]:
        response = self.doc.post("/api/v1/bedside/verify", json={
            "patient_payload": self.world.payload(self.patient["wristband_item_id"]),
            "product_payload": self.world.payload(bag)})
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def decide(self, shipment_id: str, decision: str, **body: Any) -> Any:
        meaning = "approved" if decision == "accept" else "rejected"
        return self.qa.post(f"/api/v1/shipments/{shipment_id}/disposition", json={
            "decision": decision, "signature": sig(meaning), **body})


@pytest.fixture
def route(world: World, login: Any) -> Route:
    return Route(world, login)


def trail_matches_rows(world: World) -> None:
    """audit verify: the chain holds, and every shipment, item list, receipt, log (and
    storage placement) is what its audit events last recorded."""
    from gmp_mes import reconcile
    from gmp_mes.audit import verify_chain

    with world.db.engine.connect() as c:
        assert verify_chain(c).ok
    with world.tx() as s:
        assert [str(d) for d in reconcile.differences(s)] == []


def codes(body: dict[str, Any]) -> set[str]:
    return {r["code"] for r in body["reasons"]}


def open_alerts(world: World, kind: str) -> int:
    from sqlalchemy import text

    with world.db.engine.connect() as c:
        return c.execute(text("SELECT count(*) FROM alert WHERE kind = :k AND status = 'open'"),
                         {"k": kind}).scalar_one()


@pytest.mark.requirement("EU GDP 9.2")
def test_ship_log_receive_clean_shipment(route: Route) -> None:
    shipment = route.shipped(logger_id="LOG-7", shipper_id="DEWAR-3", courier="Cryoport")
    body = route.op.get(f"/api/v1/shipments/{shipment}").get_json()
    assert body["status"] == "in_transit" and body["condition"] == COLD
    assert sorted(i["item_id"] for i in body["items"]) == sorted(route.bags)
    assert all(route.world.get(b).status == "shipped" for b in route.bags)
    uploaded = route.upload(shipment, log_csv([-180.0] * 10))
    assert uploaded.status_code == 201, uploaded.get_json()
    summary = uploaded.get_json()
    assert (summary["readings"], summary["min_c"], summary["max_c"]) == (10, -180.0, -180.0)
    assert summary["excursions"] == [] and summary["gaps"] == []
    [event] = audit_events(route.world.db, entity_type="temperature_log")
    assert event["username"] == route.world.operator.username
    assert count(route.world.db, "temperature_reading") == 10
    received = route.receive(shipment)
    assert received.status_code == 201, received.get_json()
    out = received.get_json()
    assert sorted(out["received"]) == sorted(route.bags) and out["hold"] is None
    assert out["reconciliation"] == {"missing": [], "unexpected": []}
    assert out["status"] == "received"
    assert route.bedside(route.bags[0])["match"] is True
    listed = route.doc.get("/api/v1/shipments?size=1").get_json()
    assert [s["shipment_id"] for s in listed["shipments"]] == [shipment]


@pytest.mark.requirement("EU GDP 9.2")
@pytest.mark.requirement("SPEC §14")
def test_excursion_blocks_at_bedside_until_qa_accepts(route: Route) -> None:
    shipment = route.shipped(logger_id="LOG-8")
    temps = [-180.0] * 20
    temps[5:8] = [-140.0, -120.5, -145.0]
    summary = route.upload(shipment, log_csv(temps)).get_json()
    [excursion] = summary["excursions"]
    assert excursion["minutes"] == 3 and excursion["extreme_c"] == -120.5
    out = route.receive(shipment).get_json()
    assert out["hold"] == "temperature_excursion"
    assert open_alerts(route.world, "temperature_excursion") == 1
    verdict = route.bedside(route.bags[0])
    assert verdict["match"] is False and "temperature_excursion" in codes(verdict)
    scan = route.doc.post("/api/v1/scans", json={"payload": route.world.payload(route.bags[1]),
                                                 "workstation": "ward"}).get_json()
    assert scan["ok"] is False and "temperature_excursion" in codes(scan)
    assert_problem(route.decide(shipment, "accept"), 422)  # no justification
    accepted = route.decide(shipment, "accept",
                            justification="excursion above -150 for 3 min; vapour phase "
                                          "stayed below -120, stability data cover it")
    assert accepted.status_code == 201, accepted.get_json()
    body = accepted.get_json()
    assert body["decision"] == "accepted" and body["holding"] is False
    assert body["signature"]["meaning"] == "approved"
    assert open_alerts(route.world, "temperature_excursion") == 0
    assert route.bedside(route.bags[0])["match"] is True
    assert_problem(route.decide(shipment, "reject"), 409, "not_held")
    trail_matches_rows(route.world)


@pytest.mark.requirement("EU GDP 9.2")
def test_logger_without_log_is_temperature_unknown_and_qa_rejects(route: Route) -> None:
    shipment = route.shipped(logger_id="LOG-9")
    out = route.receive(shipment).get_json()
    assert out["hold"] == "temperature_unknown"
    assert "temperature_unknown" in codes(route.bedside(route.bags[0]))
    rejected = route.decide(shipment, "reject")
    assert rejected.status_code == 201, rejected.get_json()
    assert all(route.world.get(b).status == "rejected" for b in route.bags)
    assert open_alerts(route.world, "temperature_unknown") == 0
    verdict = route.bedside(route.bags[0])
    assert verdict["match"] is False and "temperature_unknown" not in codes(verdict)
    trail_matches_rows(route.world)


def test_no_logger_no_log_is_no_hold(route: Route) -> None:
    shipment = route.shipped()
    assert route.receive(shipment).get_json()["hold"] is None
    assert_problem(route.decide(shipment, "accept", justification="x"), 409, "not_held")


@pytest.mark.requirement("EU GDP 5.5")
def test_receipt_with_a_missing_and_an_unexpected_bag(route: Route, world: World) -> None:
    stranger = world.item(world.enrol()["coi_id"], status="released", site=TREATMENT,
                          expires_at=utcnow() + timedelta(days=30))
    shipment = route.shipped()
    out = route.receive(shipment, items=[route.bags[0]],
                        extra_payloads=(world.payload(stranger), "GMP1:GARBAGE")).get_json()
    assert out["received"] == [route.bags[0]] and out["status"] == "partially_received"
    assert out["reconciliation"]["missing"] == [route.bags[1]]
    unexpected = out["reconciliation"]["unexpected"]
    assert [(u["item_id"], u["code"]) for u in unexpected] == [
        (stranger, "not_in_shipment"), (None, "malformed")]
    assert world.get(route.bags[1]).status == "shipped"  # still in transit
    assert world.get(stranger).status == "released"  # an unexpected label receives nothing
    assert open_alerts(world, "shipment_discrepancy") == 1
    later = route.receive(shipment, items=[route.bags[1]]).get_json()
    assert later["received"] == [route.bags[1]] and later["status"] == "received"
    assert_problem(route.receive(shipment), 409, "already_received")


def test_a_receipt_is_recorded_at_the_destination_by_its_users(route: Route) -> None:
    shipment = route.shipped()
    at_plant = route.op.post(f"/api/v1/shipments/{shipment}/receive", json={
        "site": PLANT, "payloads": ["GMP1:NOTHING"]})
    assert_problem(at_plant, 409, "wrong_destination")
    by_plant = route.op.post(f"/api/v1/shipments/{shipment}/receive", json={
        "site": TREATMENT, "payloads": ["GMP1:NOTHING"]})
    assert_problem(by_plant, 403, "site_mismatch")
    assert count(route.world.db, "shipment_receipt") == 0


@pytest.mark.requirement("SPEC §14")
def test_shipping_is_all_or_none(route: Route, world: World) -> None:
    quarantined = world.item(route.patient["coi_id"], status="quarantine",
                             expires_at=utcnow() + timedelta(days=30))
    before = (count(world.db, "custody_event"), count(world.db, "shipment"))
    problem = assert_problem(route.ship(items=[*route.bags, quarantined]), 409,
                             "invalid_transition")
    assert problem["item_id"] == quarantined
    assert (count(world.db, "custody_event"), count(world.db, "shipment")) == before
    assert all(world.get(b).status == "released" for b in route.bags)
    assert_problem(route.doc.post("/api/v1/shipments", json={
        "items": route.bags, "from_site": PLANT, "to_site": TREATMENT, "condition": COLD}),
        403, "site_mismatch")
    assert_problem(route.ship(condition={"min_c": -150.0, "max_c": -196.0}), 422)


@pytest.mark.requirement("21 CFR 11.10(h)")
@pytest.mark.parametrize(("text", "line"), [
    ("time,temp\n2026-03-01T08:00:00Z,-150\n", 1),
    ("timestamp,temperature_c\n2026-03-01T08:00:00Z,-150\nsoon,-150\n", 3),
    ("timestamp,temperature_c\n2026-03-01T08:00:00Z,-150\n2026-03-01T08:01:00Z,cold\n", 3),
])
def test_bad_csv_is_422_naming_the_line(route: Route, text: str, line: int) -> None:
    shipment = route.shipped()
    problem = assert_problem(route.upload(shipment, text), 422, "temperature_log_invalid")
    assert problem["line"] == line and problem["detail"].startswith(f"line {line}:")
    assert count(route.world.db, "temperature_log") == 0


def test_json_log_and_one_log_per_shipment(route: Route) -> None:
    shipment = route.shipped()
    readings = [{"at": "2026-03-01T08:00:00Z", "c": -180},
                {"at": "2026-03-01T08:01:00Z", "c": -100}]
    first = route.op.post(f"/api/v1/shipments/{shipment}/temperature-log",
                          json={"readings": readings})
    assert first.status_code == 201 and len(first.get_json()["excursions"]) == 1
    assert_problem(route.upload(shipment, log_csv([-180.0])), 409, "temperature_log_exists")
    assert_problem(route.op.post(f"/api/v1/shipments/{shipment}/temperature-log",
                                 data="x", content_type="text/plain", json=None),
                   415, "unsupported_media_type")


def test_a_30_day_log_is_not_too_large(route: Route) -> None:
    shipment = route.shipped()
    text = log_csv([-180.0] * 43_200)
    assert len(text) > 1024 * 1024  # above the application's request limit
    response = route.upload(shipment, text)
    assert response.status_code == 201, response.get_data(as_text=True)[:300]
    assert response.get_json()["readings"] == 43_200


@pytest.mark.requirement("EU GMP Part IV 6.5")
def test_the_batch_record_lists_the_shipments_of_its_bags(world: World, login: Any) -> None:
    from gmp_mes import registry

    patient = world.enrol()
    bag = world.item(patient["coi_id"], status="released", batch_number="CART-AUTO-X1",
                     expires_at=utcnow() + timedelta(days=30))
    route = Route(world, login, bags=0)
    route.bags = [bag]
    shipment = route.shipped(logger_id="L1")
    route.upload(shipment, log_csv([-180.0, -140.0, -180.0]))
    route.receive(shipment)
    with world.app.app_context(), world.tx() as s:
        [provider] = [p for owner, p in registry.batch_record_sections.owners()
                      if owner == "logistics"]
        [section] = provider(s, "CART-AUTO-X1")
    assert section.key == "logistics" and section.table is not None
    [row] = section.data  # type: ignore[misc]
    assert row["shipment_id"] == shipment and row["hold"] == "temperature_excursion"
    assert row["temperature_log"]["excursions"][0]["extreme_c"] == -140.0
    assert section.table.rows[0][0].startswith(shipment)


def test_two_shipments_of_the_same_bags_at_once_ship_them_once(route: Route, app: Any) -> None:
    """The item rows are locked in id order by each shipment: one ships both bags, the
    other is refused (the bags are shipped already) and ships nothing."""
    import threading

    from tests.conftest import ApiClient

    barrier = threading.Barrier(2)
    answers: list[Any] = [None, None]

    def ship(n: int) -> None:
        api = ApiClient(app.test_client(), route.op.token)
        barrier.wait()
        response = api.post("/api/v1/shipments", json={
            "items": route.bags if n else list(reversed(route.bags)), "from_site": PLANT,
            "to_site": TREATMENT, "condition": COLD})
        answers[n] = response.status_code

    threads = [threading.Thread(target=ship, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(answers) == [201, 409], answers
    assert count(route.world.db, "shipment") == 1
    assert count(route.world.db, "shipment_item") == 2


def _thaw(route: Route, bag: str) -> Any:
    return route.doc.post(f"/api/v1/items/{bag}/custody",
                          json={"action": "thaw", "site": TREATMENT})


def _ship_back(route: Route, items: list[str]) -> Any:
    return route.doc.post("/api/v1/shipments", json={
        "items": items, "from_site": TREATMENT, "to_site": PLANT, "condition": COLD})


@pytest.mark.requirement("EU GDP 9.2")
@pytest.mark.requirement("SPEC §14")
def test_a_held_item_is_neither_shipped_nor_thawed_until_qa_decides(route: Route,
                                                                   world: World) -> None:
    shipment = route.shipped(logger_id="LOG-10")
    temps = [-180.0] * 20
    temps[3:5] = [-130.0, -125.0]
    route.upload(shipment, log_csv(temps))
    assert route.receive(shipment).get_json()["hold"] == "temperature_excursion"
    before = (count(world.db, "custody_event"), count(world.db, "shipment"))
    problem = assert_problem(_ship_back(route, route.bags), 409, "temperature_excursion")
    assert problem["item_id"] == sorted(route.bags)[0] and shipment in problem["detail"]
    assert "cannot be shipped" in problem["detail"]
    assert [r["code"] for r in problem["reasons"]] == ["temperature_excursion"]
    # Shipping through plain custody meets the same rule, and so does a thaw.
    assert_problem(route.doc.post(f"/api/v1/items/{route.bags[1]}/custody", json={
        "action": "ship", "site": PLANT}), 409, "temperature_excursion")
    thawed = assert_problem(_thaw(route, route.bags[0]), 409, "temperature_excursion")
    assert "cannot be thawed" in thawed["detail"]
    assert (count(world.db, "custody_event"), count(world.db, "shipment")) == before
    assert all(world.get(b).status == "received" for b in route.bags)
    # A move inside the site stays allowed: the held bag must still be stored.
    moved = route.doc.post(f"/api/v1/items/{route.bags[0]}/custody", json={
        "action": "move", "site": TREATMENT, "location": "Quarantine dewar"})
    assert moved.status_code == 201, moved.get_json()
    accepted = route.decide(shipment, "accept", justification="3 min above -150, within "
                                                              "the stability data")
    assert accepted.status_code == 201, accepted.get_json()
    assert _thaw(route, route.bags[0]).status_code == 201
    assert _ship_back(route, [route.bags[1]]).status_code == 201


@pytest.mark.requirement("SPEC §14")
def test_a_bag_that_came_without_its_log_is_not_thawed(route: Route, world: World) -> None:
    shipment = route.shipped(logger_id="LOG-11")
    assert route.receive(shipment).get_json()["hold"] == "temperature_unknown"
    assert_problem(_thaw(route, route.bags[0]), 409, "temperature_unknown")
    assert_problem(_ship_back(route, [route.bags[1]]), 409, "temperature_unknown")
    assert world.get(route.bags[0]).status == "received"


def test_a_thaw_waits_for_a_hold_being_set_and_is_refused(route: Route, app: Any,
                                                          world: World) -> None:
    """A log uploaded after receipt puts the bags on hold while a clinician thaws one:
    the hold locks the bags' rows, so the thaw waits for it and is then refused (without
    the lock it would read "no hold" and thaw a bag about to be held)."""
    import threading

    from sqlalchemy import text

    from gmp_mes.models import User
    from logistics import services
    from tests.conftest import ApiClient

    if world.db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writing transaction at a time: nothing interleaves")
    shipment = route.shipped()  # no logger: received without a hold
    assert route.receive(shipment).get_json()["hold"] is None
    temps = [-180.0] * 10
    temps[4] = -120.0
    held, go = threading.Event(), threading.Event()
    answer: list[Any] = []

    def upload() -> None:
        with app.app_context(), world.tx(world.operator) as s:
            services.upload_log(s, shipment, data=log_csv(temps).encode(),
                                user=s.get(User, world.operator.user_id))
            held.set()
            go.wait(timeout=120)  # commit only once the thaw is waiting

    def thaw() -> None:
        api = ApiClient(app.test_client(), route.doc.token)
        answer.append(api.post(f"/api/v1/items/{route.bags[0]}/custody",
                               json={"action": "thaw", "site": TREATMENT}))

    uploader = threading.Thread(target=upload)
    uploader.start()
    assert held.wait(timeout=120)
    thawer = threading.Thread(target=thaw)
    thawer.start()
    with world.db.engine.connect() as c:  # wait until the thaw waits for a row lock
        while thawer.is_alive() and not c.execute(text(
                "SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar_one():
            thawer.join(timeout=0.05)
    go.set()
    uploader.join(timeout=120)
    thawer.join(timeout=120)
    assert_problem(answer[0], 409, "temperature_excursion")
    assert world.get(route.bags[0]).status == "received"
