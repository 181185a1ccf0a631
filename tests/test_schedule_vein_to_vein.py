"""The vein-to-vein report (SPEC §13): per process version and per process, patients
first infused in the period, median and 90th percentile vein-to-vein time, the
manufacturing failure rate (rejected of decided); figures computed by hand on a seeded
set (five patients on two versions, one rejected batch, one undecided); bad query input;
CSV content; the page with its charts and the /reports index; percentile invariants."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gmp_mes.clock import clock, utcnow
from tests.conftest import sig
from tests.helpers import assert_problem, trail_time
from tests.test_qc_fixtures import Lab, lab_fixture, plant_fixture, signed  # noqa: F401

HOSPITAL = "HOSP1"
URL = "/api/v1/reports/vein-to-vein"


@pytest.fixture(autouse=True)
def _long_tokens(app_config: dict[str, Any]) -> None:
    # The seeded set spans months of the frozen clock; a bearer token lives 8 hours.
    app_config["token_ttl_minutes"] = 60 * 24 * 365


@dataclass
class Infused:
    coi_id: str
    batch_number: str
    version: int
    collected_at: datetime
    administered_at: datetime


@dataclass
class Seeded:
    lab: Lab
    patients: list[Infused] = field(default_factory=list)
    rejected: str = ""
    undecided: str = ""
    began: date = date.min  # the day the first patient was collected

    def day(self, index: int) -> date:
        return self.patients[index].administered_at.date()


def _user(s: Any, person: Any) -> Any:
    from gmp_mes.models import User

    return s.get(User, person.user_id)


def infuse(lab: Lab, api: Any, days: int) -> Infused:
    """A patient collected (the plant helper's apheresis an hour before it is entered),
    the batch made, tested, released, shipped, received and thawed, and the bag
    administered exactly ``days`` days after the apheresis."""
    from batches import services as batches
    from identity import services as identity
    from labels import services as labels

    plant = lab.plant
    number = lab.ready()
    with plant.tx() as s:
        (collection,) = identity.collections_of(s, batches.batch_coi(s, number))
        collected_at = collection.collected_at
    clock.advance(timedelta(days=1))
    lab.release(number)
    (bag,) = lab.items(number)
    with plant.tx(plant.operator) as s:
        identity.record_custody(s, bag, action="ship", site=HOSPITAL,
                                user=_user(s, plant.operator))
    with plant.tx(plant.clinician) as s:
        identity.record_custody(s, bag, action="receive", site=HOSPITAL,
                                user=_user(s, plant.clinician), location="LN2-1")
    administered_at = collected_at + timedelta(days=days)
    clock.freeze(administered_at - timedelta(minutes=30))
    with plant.tx(plant.clinician) as s:
        identity.record_custody(s, bag, action="thaw", site=HOSPITAL,
                                user=_user(s, plant.clinician))
        coi = batches.batch_coi(s, number)
        wristband = labels.payload_for_item(s, identity.get_patient(s, coi).wristband_item_id)
        product = labels.payload_for_item(s, bag)
        version = batches.get_batch(s, number).process_version
    clock.freeze(administered_at)
    answer = api.post("/api/v1/administrations", json={
        "patient_payload": wristband, "product_payload": product,
        "signature": sig("administered")})
    assert answer.status_code == 201, answer.get_json()
    clock.advance(timedelta(hours=1))
    return Infused(coi, number, version, collected_at, administered_at)


@pytest.fixture
def seeded(lab: Lab, login: Any, db: Any) -> Seeded:
    """v1: patients infused after 10, 12 and 20 days and one batch rejected; v2: after 15
    and 30 days, and one batch awaiting release (not decided)."""
    from qc import services as qc

    clock.freeze(max(utcnow(), trail_time(db)) + timedelta(seconds=1))
    api = login(lab.plant.clinician)
    out = Seeded(lab, began=utcnow().date())
    out.patients += [infuse(lab, api, days) for days in (10, 12, 20)]
    out.rejected = lab.ready()
    with lab.tx(lab.qa) as s:
        qc.reject_batch(s, out.rejected, user_id=lab.qa.user_id, signature=signed("rejected"),
                        reason="viability below specification on re-test")
    clock.advance(timedelta(days=1))
    lab.plant.approve(2)  # new batches start on v2 from here
    out.patients += [infuse(lab, api, days) for days in (15, 30)]
    out.undecided = lab.ready()
    clock.advance(timedelta(days=1))
    return out


def _by_group(report: dict[str, Any]) -> dict[tuple[str, int | None], dict[str, Any]]:
    return {(p["process_code"], p["process_version"]): p for p in report["processes"]}


@pytest.mark.requirement("SPEC §13")
def test_the_figures_match_those_computed_by_hand(seeded: Seeded, login: Any) -> None:
    assert [p.version for p in seeded.patients] == [1, 1, 1, 2, 2]
    first, last = seeded.began, seeded.day(4)
    answer = login(seeded.lab.qa).get(f"{URL}?from={first}&to={last}")
    assert answer.status_code == 200, answer.get_json()
    report = answer.get_json()
    assert (report["from"], report["to"]) == (first.isoformat(), last.isoformat())
    groups = _by_group(report)
    assert list(groups) == [("CART-AUTO", None), ("CART-AUTO", 1), ("CART-AUTO", 2)]
    # v1: 10, 12, 20 days. Median 12; 90th percentile (linear, Hyndman-Fan 7): rank
    # (3 - 1) x 0.9 = 1.8, so 12 + 0.8 x (20 - 12) = 18.4. Decided: 3 released, 1
    # rejected.
    v1 = groups[("CART-AUTO", 1)]
    assert v1["count"] == 3 and v1["median_days"] == 12.0
    assert v1["p90_days"] == pytest.approx(18.4)
    assert (v1["decided"], v1["rejected"], v1["failure_rate"]) == (4, 1, 0.25)
    # v2: 15, 30. Median 22.5; rank 0.9: 15 + 0.9 x 15 = 28.5. The batch awaiting
    # release is not decided.
    v2 = groups[("CART-AUTO", 2)]
    assert v2["count"] == 2 and v2["median_days"] == 22.5
    assert v2["p90_days"] == pytest.approx(28.5)
    assert (v2["decided"], v2["rejected"], v2["failure_rate"]) == (2, 0, 0.0)
    # Every version: 10, 12, 15, 20, 30. Median 15; rank 4 x 0.9 = 3.6: 20 + 0.6 x 10 = 26.
    everything = groups[("CART-AUTO", None)]
    assert everything["count"] == 5 and everything["median_days"] == 15.0
    assert everything["p90_days"] == pytest.approx(26.0)
    assert (everything["decided"], everything["rejected"]) == (6, 1)
    assert everything["failure_rate"] == pytest.approx(1 / 6)
    rows = {r["coi_id"]: r for r in report["patients"]}
    assert [r["vein_to_vein_days"] for r in report["patients"]] == [10.0, 12.0, 20.0, 15.0,
                                                                     30.0]
    one = seeded.patients[0]
    assert rows[one.coi_id]["batch_number"] == one.batch_number
    assert not {"given_name", "family_name", "date_of_birth", "mrn"} & set(rows[one.coi_id])


def test_the_period_counts_patients_by_their_first_infusion(seeded: Seeded, login: Any) -> None:
    api = login(seeded.lab.qa)
    # From the day after the first infusion to the day of the fourth: patients 2-4.
    answer = api.get(f"{URL}?from={seeded.day(0) + timedelta(days=1)}&to={seeded.day(3)}")
    report = answer.get_json()
    assert [r["coi_id"] for r in report["patients"]] == [p.coi_id for p in
                                                        seeded.patients[1:4]]
    v1 = _by_group(report)[("CART-AUTO", 1)]
    assert v1["count"] == 2 and v1["median_days"] == 16.0
    # A day with nothing: no group at all.
    quiet = api.get(f"{URL}?from=2001-01-01&to=2001-01-02").get_json()
    assert quiet["processes"] == [] and quiet["patients"] == []


def test_the_timeline_gives_the_same_vein_to_vein_time(seeded: Seeded, login: Any) -> None:
    one = seeded.patients[2]
    timeline = login(seeded.lab.qa).get(f"/api/v1/patients/{one.coi_id}/timeline").get_json()
    assert timeline["vein_to_vein_seconds"] == 20 * 86400
    assert timeline["vein_to_vein"] == "P20D"


@pytest.mark.parametrize("query, field", [
    ("from=2026-13-01", "from"), ("to=yesterday", "to"), ("from=2026-02-30", "from"),
    ("from=2026-03-02&to=2026-03-01", "from"), ("from=1800-01-01", "from"),
    ("from=1990-01-01&to=2026-01-01", "from"),
])
def test_bad_query_input_is_a_422_naming_the_field(lab: Lab, login: Any, client: Any,
                                                   query: str, field: str) -> None:
    from tests.test_pages_core import page_login

    body = assert_problem(login(lab.qa).get(f"{URL}?{query}"), 422)
    # The edge names a query argument "query.<name>"; the service's own check its name.
    assert field in {key.removeprefix("query.") for key in body["errors"]}, body
    page_login(client, lab.qa)
    page = client.get(f"/reports/vein-to-vein?{query}")
    assert page.status_code == 422 and "error-summary" in page.get_data(as_text=True)
    assert client.get(f"/reports/vein-to-vein.csv?{query}").status_code == 422


def test_roles(lab: Lab, login: Any, make_user: Any) -> None:
    assert_problem(login(lab.plant.operator).get(URL), 403, "forbidden_role")
    assert_problem(login(lab.analyst).get(URL), 403, "forbidden_role")
    for person in (lab.qa, lab.plant.clinician, make_user("ada", "admin")):
        assert login(person).get(URL).status_code == 200


def test_csv_content(seeded: Seeded, client: Any) -> None:
    from tests.test_pages_core import page_login

    page_login(client, seeded.lab.qa)
    query = f"from={seeded.began}&to={seeded.day(4)}"
    exported = client.get(f"/reports/vein-to-vein.csv?{query}")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    assert "attachment" in exported.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert [r["coi_id"] for r in rows] == [p.coi_id for p in seeded.patients]
    assert [r["vein_to_vein_days"] for r in rows] == ["10.000", "12.000", "20.000",
                                                       "15.000", "30.000"]
    first = seeded.patients[0]
    assert rows[0]["batch_number"] == first.batch_number and rows[0]["process_version"] == "1"
    assert datetime.fromisoformat(rows[0]["administered_at_utc"]) == first.administered_at.replace(
        microsecond=0)
    assert rows[0]["administered_at_utc"].endswith("+00:00")
    assert set(rows[0]) == {"coi_id", "process_code", "process_version", "batch_number",
                            "collected_at_utc", "administered_at_utc", "vein_to_vein_days"}
    text = exported.get_data(as_text=True)
    assert "Grace" not in text and "Hopper" not in text  # pseudonymised
    summary = client.get(f"/reports/vein-to-vein-summary.csv?{query}")
    table = {(r["process_code"], r["process_version"]): r
             for r in csv.DictReader(io.StringIO(summary.get_data(as_text=True)))}
    assert table[("CART-AUTO", "1")] == {
        "process_code": "CART-AUTO", "process_version": "1", "patients": "3",
        "median_days": "12.000", "p90_days": "18.400", "decided": "4", "rejected": "1",
        "failure_rate": "0.250"}
    assert table[("CART-AUTO", "")]["patients"] == "5"


def test_the_page_shows_the_charts_and_is_on_the_reports_index(seeded: Seeded,
                                                                 client: Any) -> None:
    from tests.test_pages_core import page_login

    page_login(client, seeded.lab.plant.clinician)
    index = client.get("/reports").get_data(as_text=True)
    assert "/reports/vein-to-vein" in index
    page = client.get(f"/reports/vein-to-vein?from={seeded.began}&to={seeded.day(4)}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert text.count('class="chart"') == 2 and "data:image/svg+xml" in text
    assert 'data-process="CART-AUTO" data-version="1"' in text and "25 %" in text
    assert "vein-to-vein.csv?from=" in text and "vein-to-vein-summary.csv?from=" in text


def test_the_charts_draw_what_the_report_says(seeded: Seeded) -> None:
    from schedule import services

    with seeded.lab.tx(seeded.lab.qa) as s:
        report = services.vein_to_vein_report(s, seeded.began, seeded.day(4))
    distribution = services.distribution_chart(report)
    series = {x.name: (list(x.x), list(x.y)) for x in distribution.series}
    assert series["patient"] == ([1, 1, 1, 2, 2], [10.0, 12.0, 20.0, 15.0, 30.0])
    assert series["median"] == ([1, 2], [12.0, 22.5])
    assert list(distribution.x_categories) == ["CART-AUTO v1", "CART-AUTO v2"]
    assert "CART-AUTO v2 median 22.5" in distribution.alt
    failure = services.failure_chart(report)
    assert list(failure.series[0].y) == [25.0, 0.0]
    assert "CART-AUTO v1 1 of 4" in failure.alt


def test_an_empty_report_still_draws(lab: Lab) -> None:
    from gmp_mes import charts
    from schedule import services

    with lab.tx(lab.qa) as s:
        report = services.vein_to_vein_report(s)
    assert report.processes == [] and report.end == utcnow().date()
    assert report.start == report.end - timedelta(days=365)
    assert services.distribution_chart(report).empty
    assert charts.img_tag(services.failure_chart(report)).startswith("<img")


# --- the percentiles (pure) ------------------------------------------------------------

days = st.lists(st.floats(min_value=0, max_value=3650, allow_nan=False), min_size=1,
                max_size=60)


@given(days)
@settings(max_examples=200, deadline=None)
def test_percentile_invariants(values: list[float]) -> None:
    from schedule.services import percentiles

    median, p90 = percentiles(values)
    assert median is not None and p90 is not None
    assert min(values) <= median <= p90 <= max(values)
    # Definition 7 interpolates from the order statistic of rank floor((n - 1) p): at
    # least that many values plus one lie at or below the figure.
    assert sum(v <= median for v in values) >= math.floor(0.5 * (len(values) - 1)) + 1
    assert sum(v <= p90 for v in values) >= math.floor(0.9 * (len(values) - 1)) + 1
    # Order does not matter, and shifting every time shifts both figures.
    assert percentiles(list(reversed(values))) == (median, p90)
    shifted = percentiles([v + 7 for v in values])
    assert shifted[0] == pytest.approx(median + 7) and shifted[1] == pytest.approx(p90 + 7)


def test_percentiles_of_none_and_of_one() -> None:
    from schedule.services import percentiles

    assert percentiles([]) == (None, None)
    assert percentiles([12.5]) == (12.5, 12.5)
    assert percentiles([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) == (5.5, pytest.approx(9.1))


def test_period_defaults_and_bounds() -> None:
    from gmp_mes.errors import ValidationFailed
    from schedule.services.vein_to_vein import period

    clock.freeze(datetime(2026, 12, 2, 10, tzinfo=UTC))
    assert period(None, None) == (date(2025, 12, 2), date(2026, 12, 2))
    assert period(date(2026, 3, 1), date(2026, 3, 1)) == (date(2026, 3, 1), date(2026, 3, 1))
    with pytest.raises(ValidationFailed) as refused:
        period(date(2026, 3, 2), date(2026, 3, 1))
    assert refused.value.errors == {"from": ["must not be after to"]}


# --- what the report asks of the domains below ------------------------------------------


def test_decided_batches_counts_a_batch_in_the_period_of_its_first_decision(lab: Lab,
                                                                           db: Any) -> None:
    """A conditional release later rejected is a failure of the period it was first
    decided in; a batch first decided before the period is not in it."""
    from qc import services as qc

    clock.freeze(max(utcnow(), trail_time(db)) + timedelta(seconds=1))
    before = lab.ready()
    lab.release(before)
    clock.advance(timedelta(days=2))
    start = utcnow()
    conditional = lab.ready(skip=("sterility",))
    lab.release(conditional, conditional=True, justification="rapid progression")
    released = lab.ready()
    lab.release(released)
    clock.advance(timedelta(days=1))
    end = utcnow()
    clock.advance(timedelta(days=5))
    with lab.tx(lab.qa) as s:
        qc.reject_batch(s, conditional, user_id=lab.qa.user_id, signature=signed("rejected"),
                        reason="sterility positive on day 7")
    with lab.tx(lab.qa) as s:
        verdicts = qc.decided_batches(s, start, end)
        assert [(v.batch_number, v.rejected) for v in verdicts] == [
            (conditional, True), (released, False)]
        assert qc.decided_batches(s, end, utcnow() + timedelta(seconds=1)) == []


def test_first_collected_is_each_patients_earliest_apheresis(lab: Lab, db: Any) -> None:
    from identity import services as identity
    from tests.test_batches_fixtures import APHERESIS

    first = lab.plant.starting_material(collected_hours_ago=5)
    with lab.tx() as s:
        coi = identity.get_item(s, first).coi_id
        identity.record_collection(s, coi_id=coi, collected_at=utcnow() - timedelta(hours=2),
                                   site=APHERESIS, volume_ml=100.0)
        earliest = identity.collection_of_item(s, first)
        assert earliest is not None
        assert identity.first_collected(s, [coi, coi, "A999926ZZZZZZ1"]) == {
            coi: earliest.collected_at}
        assert identity.first_collected(s, []) == {}


def test_a_patient_counts_once_at_the_first_administration() -> None:
    from schedule.services.timeline import first_administrations

    t = datetime(2026, 3, 1, tzinfo=UTC)
    rows = [("A", "B-2", t + timedelta(days=3)), ("A", "B-1", t), ("B", "B-3", None),
            ("C", "B-4", t + timedelta(days=1))]
    assert first_administrations(rows) == {"A": ("B-1", t), "C": ("B-4", t + timedelta(days=1))}
