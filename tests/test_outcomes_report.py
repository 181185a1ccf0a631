"""The outcome report (SPEC §16): per infused batch, pseudonymised by COI, the release QC
values, dose and expansion next to the response at each visit and the worst CRS/ICANS
grades; checked against figures computed by hand; API, page with its plot, CSV, roles."""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from scipy import stats

from tests.helpers import assert_problem
from tests.test_forecasts import DAY_PARAMETER
from tests.test_outcomes_fixtures import (  # noqa: F401 - fixtures
    FOLLOW_UP,
    Ward,
    follow_up_definition,
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
    assert a["forecast"] is None  # v91 declares no [forecast]
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


# --- the forecast before harvest (SPEC §15 in the §16 report) ---------------------------

FORECAST_VERSION = 92
# The culture day is entered with each count (SPEC §15 day_parameter, as in the forecasts
# tests), so the test sets the days it computes with instead of moving the clock.
FORECAST = """
[forecast]
step = "expansion"
parameter = "viable_cells"
target = 2.0e9
harvest_day = 12.0
day_parameter = "culture_day"
"""


@pytest.fixture(name="forecast_ward")
def forecast_ward_fixture(ward: Ward, tmp_path: Path) -> Ward:
    """The ward with CART-AUTO v92: v91's follow-up plus a forecast (culture day entered
    with each count); the newest approved version, so new batches use it."""
    import processes.services as processes
    from tests.test_qc_fixtures import signed

    path = follow_up_definition(tmp_path / "forecast", version=FORECAST_VERSION,
                                follow_up=FOLLOW_UP + FORECAST)
    source = path / f"cart-auto-v{FORECAST_VERSION}.toml"
    source.write_text(source.read_text().replace(
        '[[steps.parameters]]\ncode = "viable_cells"', DAY_PARAMETER, 1))
    plant = ward.lab.plant
    with plant.tx(plant.qa) as s:
        processes.load_process_definitions(s, [path])
    with plant.tx(plant.qa) as s:
        processes.approve_process(s, "CART-AUTO", FORECAST_VERSION,
                                  user_id=plant.qa.user_id, signature=signed("approved"))
    return ward


def _by_hand(days: list[float], cells: list[float], harvest_day: float,
             target: float) -> dict[str, float]:
    """SPEC §15's exponential forecast written out independently of forecasts.model:
    least squares of ln N on the day (closed form), the residual variance pooled with the
    counter's prior (log-sd 0.10 worth 4 degrees of freedom, DEVELOPING.md), the Student-t
    prediction of a new count at the harvest day."""
    n = len(days)
    t_mean = sum(days) / n
    y = [math.log(c) for c in cells]
    y_mean = sum(y) / n
    sxx = sum((t - t_mean) ** 2 for t in days)
    slope = sum((t - t_mean) * (v - y_mean) for t, v in zip(days, y, strict=True)) / sxx
    intercept = y_mean - slope * t_mean
    rss = sum((v - intercept - slope * t) ** 2 for t, v in zip(days, y, strict=True))
    df = 4 + n - 2
    s2 = (4 * 0.10**2 + rss) / df
    centre = intercept + slope * harvest_day
    se = math.sqrt(s2 * (1 + 1 / n + (harvest_day - t_mean) ** 2 / sxx))
    q = float(stats.t.ppf(0.95, df))
    return {"doubling_time_h": 24 * math.log(2) / slope, "median": math.exp(centre),
            "low": math.exp(centre - q * se), "high": math.exp(centre + q * se),
            "p_target": float(stats.t.sf((math.log(target) - centre) / se, df))}


@pytest.mark.requirement("SPEC §15")
@pytest.mark.requirement("SPEC §16")
def test_the_forecast_at_the_last_count_before_harvest(forecast_ward: Ward, client,
                                                       login) -> None:
    from tests.test_pages_core import page_login

    ward = forecast_ward
    api = login(ward.clinician)
    # A doubles every day from day 2 to 4 (1e7, 2e7, 4e7); the harvest-day count (5e9 on
    # day 12) is left out: the report shows what the forecast said before harvest.
    a = ward.infused(api, expansion=[(1e7, 90.0, 2.0), (2e7, 91.0, 3.0), (4e7, 92.0, 4.0),
                                     (5e9, 95.0, 12.0)],
                     qc={"viability": {"value": 91.0}, "dose": {"value": 2.5e6}})
    # B: two counts before the harvest day, no forecast; C: scattered growth.
    b = ward.infused(api, expansion=[(2e7, 85.0, 3.0), (3e7, 81.0, 5.0), (6e8, 88.0, 12.0)])
    c = ward.infused(api, expansion=[(1.0e7, 90.0, 1.0), (2.6e7, 91.0, 3.0),
                                     (5.0e7, 92.0, 4.5), (1.6e8, 93.0, 6.0)])
    for coi, bag, response in ((a[0], a[2], "CR"), (b[0], b[2], "PD"), (c[0], c[2], "PR")):
        _record(api, coi, ward.administered_at(bag), "P28D", response=response)

    rows = {r["batch_number"]: r for r in
            api.get("/api/v1/reports/outcomes?process=CART-AUTO").get_json()["rows"]}
    fa, fb, fc = (rows[x[1]]["forecast"] for x in (a, b, c))
    # A by hand: ln N = ln 1e7 + ln 2 (t - 2) exactly, so 24 h doubling and 1e7 * 2^10 at
    # day 12; no residuals, s^2 = 4 * 0.01 / 5; se^2 = s^2 (1 + 1/n + (12 - 3)^2 / Sxx)
    # with n = 3 and Sxx = 2: about 0.578 on the log scale, P(>= 2e9) about 0.98.
    se = math.sqrt(0.04 / 5 * (1 + 1 / 3 + 81 / 2))
    assert fa["model"] == "exponential" and fa["points"] == 3 and fa["as_of_day"] == 4.0
    assert fa["doubling_time_h"] == pytest.approx(24.0)
    assert fa["predicted_median"] == pytest.approx(1.024e10, rel=1e-3)
    assert fa["p_target"] == pytest.approx(
        float(stats.t.sf(math.log(2e9 / 1.024e10) / se, 5)), abs=1e-4)
    assert fa["predicted_low"] == pytest.approx(
        1.024e10 * math.exp(-float(stats.t.ppf(0.95, 5)) * se), rel=1e-3)
    assert fa["harvest_day"] == 12.0 and fa["target"] == 2e9
    assert fb["model"] is None and fb["points"] == 2 and fb["p_target"] is None
    assert fb["reason"] == "too few counts: 2 of the 3 a forecast needs"
    expected = _by_hand([1.0, 3.0, 4.5, 6.0], [1.0e7, 2.6e7, 5.0e7, 1.6e8], 12.0, 2e9)
    assert fc["model"] == "exponential" and fc["as_of_day"] == 6.0
    assert fc["doubling_time_h"] == pytest.approx(expected["doubling_time_h"], abs=0.01)
    assert fc["predicted_median"] == pytest.approx(expected["median"], rel=1e-3)
    assert fc["predicted_high"] == pytest.approx(expected["high"], rel=1e-3)
    assert fc["p_target"] == pytest.approx(expected["p_target"], abs=1e-4)

    page_login(client, ward.lab.qa)
    exported = client.get("/reports/outcomes.csv?process=CART-AUTO")
    by_batch = {r["batch_number"]: r for r in
                csv.DictReader(io.StringIO(exported.get_data(as_text=True)))}
    assert by_batch[a[1]]["forecast_model"] == "exponential"
    assert float(by_batch[a[1]]["forecast_p_target"]) == fa["p_target"]
    assert float(by_batch[a[1]]["forecast_doubling_time_h"]) == pytest.approx(24.0)
    assert by_batch[b[1]]["forecast_model"] == "" and by_batch[b[1]]["forecast_points"] == "2"
    page = client.get("/reports/outcomes?process=CART-AUTO&attribute=forecast:p_target")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'class="chart"' in text
    assert "exponential from 3 counts to day 4, doubling 24 h" in text
    assert "none: too few counts" in text
    from outcomes import services

    with ward.tx() as s:
        report = services.outcome_report(s, "CART-AUTO")
    assert "forecast:p_target" in report.attributes
    chart = services.response_chart(report, "forecast:p_target")
    assert {series.name: tuple(series.y) for series in chart.series} == {
        "CR": (fa["p_target"],), "PR": (fc["p_target"],)}
