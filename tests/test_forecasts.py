"""Issue 20 (SPEC §15) on both databases: a batch's forecast through the API and on its
page and record, the forecast and trend alerts (raised once, audited, no status
changed), control charts of a process through the API and the trends page."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import processes.services as processes
from forecasts import model, services, sweep
from gmp_mes import registry
from gmp_mes.clock import clock, utcnow
from tests.helpers import assert_problem, audit_events
from tests.test_batches_export import pdf_text, squash
from tests.test_batches_fixtures import Plant, good_values, sign
from tests.test_pages_core import page_login
from tests.test_qc_fixtures import Lab, lab_fixture, plant_fixture  # noqa: F401 - fixtures

pytestmark = pytest.mark.requirement("SPEC §15")
CONFIG = Path(__file__).resolve().parent.parent / "config" / "processes"
DAY_PARAMETER = '''[[steps.parameters]]
code = "culture_day"
name = "Culture day of the count"
unit = "d"
min = 0.0
max = 30.0

[[steps.parameters]]
code = "viable_cells"'''


def _process(tmp_path: Path, code: str, *, day_parameter: bool) -> None:
    source = (CONFIG / "cart-auto-v1.toml").read_text()
    source = source.replace('code = "CART-AUTO"', f'code = "{code}"', 1)
    if day_parameter:
        source = source.replace('[[steps.parameters]]\ncode = "viable_cells"', DAY_PARAMETER, 1)
    source += ('\n[forecast]\nstep = "expansion"\nparameter = "viable_cells"\n'
               'target = 2.0e9\nharvest_day = 12.0\nalert_below = 0.2\n'
               + ('day_parameter = "culture_day"\n' if day_parameter else ""))
    (tmp_path / f"{code.lower()}.toml").write_text(source)


@pytest.fixture(name="fc")
def forecast_plant(plant: Plant, tmp_path: Path) -> Plant:
    """The plant with two approved processes declaring a forecast: CART-FC (the culture
    day entered with each count) and CART-FT (days since batch start)."""
    directory = tmp_path / "processes"
    directory.mkdir()
    _process(directory, "CART-FC", day_parameter=True)
    _process(directory, "CART-FT", day_parameter=False)
    with plant.tx(plant.qa) as s:
        processes.load_process_definitions(s, [directory])
    for code in ("CART-FC", "CART-FT"):
        with plant.tx(plant.qa) as s:
            processes.approve_process(s, code, 1, user_id=plant.qa.user_id,
                                      signature=sign(meaning="approved"))
    return plant


def _start(plant: Plant, code: str = "CART-FC") -> str:
    from batches import services as batches

    item = plant.starting_material()
    with plant.tx() as s:
        number = batches.start_batch(s, item_id=item, user_id=plant.operator.user_id,
                                     process_code=code).batch_number
    plant.run_to(number, "transduction")
    return number


def _count(plant: Plant, number: str, cells: float, day: float | None = None) -> None:
    values = good_values(plant.definition(number).step("expansion"))
    values.update(viable_cells=cells, viability_pct=92.0)
    if day is not None:
        values["culture_day"] = day
    plant.record(number, "expansion", values)


def _forecast(login: Any, plant: Plant, number: str) -> dict[str, Any]:
    response = login(plant.qa).get(f"/api/v1/batches/{number}/forecast")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_forecast_from_the_third_count_on(fc: Plant, login: Any) -> None:
    number = _start(fc)
    _count(fc, number, 1.5e8, 2)
    _count(fc, number, 2.0e8, 3)
    answer = _forecast(login, fc, number)
    assert answer["model"] is None and answer["predicted"] is None
    assert answer["reason"] == "too few counts: 2 of the 3 a forecast needs"
    _count(fc, number, 2.7e8, 4)
    answer = _forecast(login, fc, number)
    assert answer["model"] == "exponential" and answer["reason"] is None
    assert answer["days"] == [2.0, 3.0, 4.0] and answer["points"] == 3
    assert answer["harvest_day"] == 12 and answer["target"] == 2e9
    assert 55 < answer["doubling_time_h"] < 58  # ln 2 / 0.294 per day = 56.6 h
    predicted = answer["predicted"]
    assert predicted["level"] == 0.9
    assert predicted["low"] < predicted["median"] < predicted["high"]
    assert 0 < answer["p_target"] < 1


def test_days_since_batch_start_without_a_day_parameter(fc: Plant, login: Any) -> None:
    clock.freeze(utcnow())
    number = _start(fc, "CART-FT")
    for cells in (1.5e8, 2.0e8, 2.7e8):
        clock.advance(timedelta(days=1))
        _count(fc, number, cells)
    answer = _forecast(login, fc, number)
    assert [round(d, 2) for d in answer["days"]] == [1.0, 2.0, 3.0]
    assert answer["model"] == "exponential"


def test_no_forecast_where_the_process_declares_none(plant: Plant, login: Any) -> None:
    number = plant.start()
    answer = _forecast(login, plant, number)
    assert answer["model"] is None
    assert answer["reason"] == "process CART-AUTO version 1 declares no [forecast]"
    assert_problem(login(plant.qa).get("/api/v1/batches/B-NONE/forecast"), 404)


@pytest.mark.requirement("EU GMP Chapter 1.10")
def test_forecast_below_target_alert_raised_once_audited_status_unchanged(
        fc: Plant, db: Any) -> None:
    number = _start(fc)
    for day, cells in ((2, 1.5e8), (3, 1.45e8), (4, 1.5e8)):  # a culture that does not grow
        _count(fc, number, cells, day)
    with fc.tx(fc.qa) as s:
        assert services.batch_forecast(s, number).forecast.p_target < 0.2  # type: ignore[union-attr]
    for _ in range(2):
        with fc.tx(fc.qa) as s:
            sweep.sweep(s)
    with db.engine.connect() as c:
        rows = c.execute(text("SELECT id, cause, roles, site_code FROM alert WHERE kind = "
                              "'forecast_below_target'")).all()
    assert [(r.cause, r.roles, r.site_code) for r in rows] == [
        (f"forecast_below_target:{number}", "qa,operator", "CLEAN1")]
    events = audit_events(db, entity_type="alert", entity_id=str(rows[0].id))
    assert [e["action"] for e in events] == ["create"]
    assert fc.batch(number).status == "in_process"  # advice only


def test_a_growing_batch_raises_no_forecast_alert(fc: Plant, db: Any) -> None:
    number = _start(fc)
    for day, cells in ((2, 1.5e8), (3, 2.1e8), (4, 2.9e8), (5, 4.0e8)):
        _count(fc, number, cells, day)
    with fc.tx(fc.qa) as s:
        assert sweep.sweep(s) == []


def test_batch_page_and_record_show_the_forecast_band(fc: Plant, client: Any) -> None:
    from batches import export

    number = _start(fc)
    for day, cells in ((2, 1.5e8), (3, 2.0e8), (4, 2.7e8)):
        _count(fc, number, cells, day)
    page_login(client, fc.operator)
    page = client.get(f"/batches/{number}").get_data(as_text=True)
    assert 'class="chart curve"' in page and "data:image/svg+xml;base64," in page
    assert "Exponential model from 3 counts" in page  # the alt text carries the summary
    assert "90 % prediction interval" in page
    with fc.tx() as s:
        overlay = export.expansion_overlay(s, number)
        assert overlay is not None and overlay.bands and overlay.lines[0].value == 2e9
        drawn = export.curve_charts(export.executed_record(s, number)["expansion_curve"],
                                    overlay)
        assert drawn[0].bands == overlay.bands  # the PDF's chart carries the band
        record = squash(pdf_text(export.export_batch(s, number, "pdf")[0]))
        with registry.expansion_forecast.only({}):
            assert export.expansion_overlay(s, number) is None
    assert "Exponential model from 3 counts" in record and "90 % prediction interval" in record


def test_curve_charts_without_records() -> None:
    from batches import export

    assert export.curve_charts([]) == []
    assert "No expansion records yet" in export.curve_html([])
    drawn = export.curve_charts([{"day": 1.0, "viable_cells": 1e8, "viability": 95.0},
                                 {"day": 2.0, "viable_cells": 3e8, "viability": 91.0}])
    assert [c.title for c in drawn] == ["Viable cells", "Viability"]
    assert "day 2: 3E8" in drawn[0].alt


# --- control charts --------------------------------------------------------------------

def _batch_with_volume(lab: Lab, volume: float, *, release: bool) -> str:
    plant = lab.plant
    number = plant.start()
    for step in plant.definition(number).steps:
        values = good_values(step)
        if step.code == "receipt":
            values["volume_ml"] = volume
        if step.creates == "final_product":
            values["bags"] = 1
        plant.record(number, step.code, values)
        if not release:
            break
    if release:
        lab.all_pass(number)
        lab.release(number)
    return number


def test_control_chart_api_refuses_limits_on_too_few_released_batches(
        lab: Lab, login: Any) -> None:
    numbers = [_batch_with_volume(lab, v, release=False) for v in (200.0, 230.0)]
    api = login(lab.plant.operator)
    response = api.get("/api/v1/processes/CART-AUTO/control-charts/step:receipt.volume_ml")
    assert response.status_code == 200
    chart = response.get_json()
    assert [p["batch_number"] for p in chart["points"]] == numbers
    assert [p["value"] for p in chart["points"]] == [200.0, 230.0]
    assert [p["moving_range"] for p in chart["points"]] == [None, 30.0]
    assert chart["limits"] is None and chart["min_baseline"] == model.MIN_BASELINE
    assert chart["reason"].startswith(f"limits need at least {model.MIN_BASELINE} released")
    assert all(p["rules"] == [] and not p["baseline"] for p in chart["points"])
    problem = assert_problem(
        api.get("/api/v1/processes/CART-AUTO/control-charts/step:receipt.nothing"), 422)
    assert "attribute" in problem["errors"]
    assert_problem(api.get("/api/v1/processes/NOPE/control-charts/qc:sterility"), 404)


@pytest.mark.requirement("EU GMP Chapter 1.10")
def test_trend_violation_alert_once_per_attribute_rule_and_batch(
        lab: Lab, db: Any, monkeypatch: pytest.MonkeyPatch, client: Any) -> None:
    # Two released batches stand in for the minimum here (each takes a full batch record).
    monkeypatch.setattr(model, "MIN_BASELINE", 2)
    baseline = [_batch_with_volume(lab, v, release=True) for v in (200.0, 210.0)]
    outlier = _batch_with_volume(lab, 390.0, release=False)
    with lab.tx(lab.qa) as s:
        chart = services.trend_chart(s, "CART-AUTO", "step:receipt.volume_ml")
    assert chart.limits is not None and chart.limits.baseline == 2
    assert [p.baseline for p in chart.points] == [True, True, False]
    assert [p.rules for p in chart.points] == [(), (), (1,)]
    for _ in range(2):
        with lab.tx(lab.qa) as s:
            sweep.sweep(s)
    with db.engine.connect() as c:
        causes = c.execute(text("SELECT cause FROM alert WHERE kind = 'trend_violation' "
                                "ORDER BY cause")).scalars().all()
    assert f"trend_violation:CART-AUTO:step:receipt.volume_ml:1:{outlier}" in causes
    assert len(causes) == len(set(causes))
    assert not any(b in cause for cause in causes for b in baseline
                   if cause.endswith("volume_ml:1:" + b))
    assert lab.plant.batch(outlier).status == "in_process"

    page_login(client, lab.plant.operator)
    page = client.get("/processes/CART-AUTO/trends?attribute=step:receipt.volume_ml")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "the limits rest on <strong>2 released batches</strong>" in html
    assert html.count('class="chart"') == 2 and "rule 1" in html


def test_trends_pages(plant: Plant, client: Any) -> None:
    plant.start()
    page_login(client, plant.qa)
    index = client.get("/trends").get_data(as_text=True)
    assert "/processes/CART-AUTO/trends" in index
    page = client.get("/processes/CART-AUTO/trends")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'name="attribute"' in html and "step:receipt.volume_ml" in html
    refused = client.get("/processes/CART-AUTO/trends?attribute=step:receipt.nothing")
    assert refused.status_code == 422
    body = refused.get_data(as_text=True)
    assert "is no numeric QC result" in body and "No chart drawn" in body
    assert client.get("/processes/NOPE/trends").status_code == 404


def test_a_qc_attribute_charts_the_current_numeric_result(lab: Lab, login: Any) -> None:
    from tests.test_qc_fixtures import passing

    number = lab.ready()  # every step and every QC result in, not released
    numeric = [s for s in lab.specs(number) if s.accept is None]
    assert numeric, "CART-AUTO v1 has quantitative QC tests"
    api = login(lab.qa)
    for spec in numeric:
        chart = api.get(f"/api/v1/processes/CART-AUTO/control-charts/qc:{spec.test}")
        assert chart.status_code == 200
        points = chart.get_json()["points"]
        assert [(p["batch_number"], p["value"]) for p in points] == [
            (number, passing(spec)["value"])]
    qualitative = next(s for s in lab.specs(number) if s.accept is not None)
    assert_problem(api.get(f"/api/v1/processes/CART-AUTO/control-charts/qc:"
                           f"{qualitative.test}"), 422)
