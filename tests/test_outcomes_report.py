"""The outcome report (SPEC §16): per infused batch, pseudonymised by COI, the release QC
values, dose and expansion next to the response at each visit and the worst CRS/ICANS
grades; checked against figures computed by hand; API, page with its plot, CSV, roles."""

from __future__ import annotations

import csv
import io
from datetime import UTC, timedelta

import pytest

from tests.helpers import assert_problem
from tests.test_outcomes_fixtures import (  # noqa: F401 - fixtures
    Ward,
    lab_fixture,
    plant_fixture,
    record_body,
    ward_fixture,
)


def _record(api, coi: str, at, visit: str, **body) -> None:
    answer = api.post(f"/api/v1/patients/{coi}/follow-up", json=record_body(
        visit, assessed_at=(at + timedelta(minutes=1)).astimezone(UTC).isoformat(), **body))
    assert answer.status_code == 201, answer.get_json()


@pytest.fixture
def two_patients(ward: Ward, login) -> dict:
    api = login(ward.clinician)
    # A: expanded 1e7 -> 4e7 -> 1.6e8 cells (fold 16), viability at release 91 %,
    # dose 2.5e6 cells/kg; CR at day 28 with CRS grade 2, PR at day 100 with CRS 1 and
    # ICANS 2.
    a = ward.infused(api, expansion=[(1e7, 90.0), (4e7, 92.0), (1.6e8, 95.0)],
                     qc={"viability": {"value": 91.0}, "dose": {"value": 2.5e6}})
    # B: 2e7 -> 3e7 (fold 1.5), viability 82 %, dose 4e5; progressive at day 28.
    b = ward.infused(api, expansion=[(2e7, 85.0), (3e7, 81.0)],
                     qc={"viability": {"value": 82.0}, "dose": {"value": 4e5}})
    at_a, at_b = ward.administered_at(a[2]), ward.administered_at(b[2])
    _record(api, a[0], at_a, "P28D", response="CR",
            crs={"fever": True, "hypoxia": "low_flow"})
    _record(api, a[0], at_a, "P100D", response="PR", crs={"fever": True},
            icans={"ice_score": 5})
    _record(api, b[0], at_b, "P28D", response="PD")
    return {"a": a, "b": b, "api": api}


@pytest.mark.requirement("SPEC §16")
def test_the_report_matches_the_figures_computed_by_hand(two_patients: dict, login,
                                                          ward: Ward) -> None:
    answer = two_patients["api"].get("/api/v1/reports/outcomes?process=CART-AUTO")
    assert answer.status_code == 200, answer.get_json()
    report = answer.get_json()
    assert report["process"] == "CART-AUTO"
    assert report["visits"] == ["P28D", "P100D", "P1Y", "P2Y", "P3Y"]
    rows = {r["batch_number"]: r for r in report["rows"]}
    a, b = rows[two_patients["a"][1]], rows[two_patients["b"][1]]
    assert [r["batch_number"] for r in report["rows"]] == [two_patients["a"][1],
                                                           two_patients["b"][1]]
    assert a["coi_id"] == two_patients["a"][0]
    assert not {"given_name", "family_name", "date_of_birth", "mrn"} & set(a)
    assert a["qc"]["viability"] == 91.0 and a["dose"] == 2.5e6 and a["dose_unit"] == "cells/kg"
    assert a["qc"]["sterility"] == "negative"
    assert a["expansion"]["counts"] == 3 and a["expansion"]["first_viable_cells"] == 1e7
    assert a["expansion"]["last_viable_cells"] == 1.6e8 and a["expansion"]["fold"] == 16.0
    assert a["expansion"]["final_viability"] == 95.0
    assert a["responses"] == {"P28D": "CR", "P100D": "PR"} and a["best_response"] == "CR"
    assert a["worst_crs_grade"] == 2 and a["worst_icans_grade"] == 2 and a["alive"] is True
    assert a["forecast"] is None  # issue 20's place
    assert b["qc"]["viability"] == 82.0 and b["dose"] == 4e5
    assert b["expansion"]["fold"] == 1.5 and b["expansion"]["final_viability"] == 81.0
    assert b["responses"] == {"P28D": "PD"} and b["best_response"] == "PD"
    assert b["worst_crs_grade"] is None and b["worst_icans_grade"] is None
    assert two_patients["api"].get("/api/v1/reports/outcomes?process=OTHER").get_json()[
        "rows"] == []


def test_the_plot_puts_each_batch_at_its_best_response(two_patients: dict, ward: Ward) -> None:
    from outcomes import services

    with ward.tx() as s:
        report = services.outcome_report(s, "CART-AUTO")
    chart = services.response_chart(report, "qc:viability")
    assert {(series.name, tuple(series.x), tuple(series.y)) for series in chart.series} == {
        ("CR", (1,), (91.0,)), ("PD", (4,), (82.0,))}
    fold = services.response_chart(report, "expansion:fold")
    assert {series.name: tuple(series.y) for series in fold.series} == {"CR": (16.0,),
                                                                        "PD": (1.5,)}


def test_page_csv_and_roles(two_patients: dict, ward: Ward, client, login) -> None:
    from tests.test_pages_core import page_login

    page_login(client, ward.lab.qa)
    index = client.get("/reports").get_data(as_text=True)
    assert "/reports/outcomes" in index
    page = client.get("/reports/outcomes?process=CART-AUTO&attribute=qc:dose")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'class="chart"' in text
    assert two_patients["a"][0] in text and "Grace" not in text  # pseudonymised
    assert client.get("/reports/outcomes?attribute=nonsense").status_code == 422
    exported = client.get("/reports/outcomes.csv?process=CART-AUTO")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    by_batch = {r["batch_number"]: r for r in rows}
    a = by_batch[two_patients["a"][1]]
    assert a["qc_viability"] == "91.0" and a["expansion_fold"] == "16.0"
    assert a["response_P28D"] == "CR" and a["response_P100D"] == "PR"
    assert a["worst_crs_grade"] == "2" and a["worst_icans_grade"] == "2"
    assert by_batch[two_patients["b"][1]]["best_response"] == "PD"
    operator = login(ward.lab.plant.operator)
    assert_problem(operator.get("/api/v1/reports/outcomes"), 403, "forbidden_role")
    assert_problem(login(ward.lab.qa).get("/api/v1/reports/outcomes?process=bad%20code"), 422)
