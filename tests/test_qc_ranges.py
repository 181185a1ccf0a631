"""Issue 13, QC entry: qualitative outcomes are choices, not free text; values are
checked against their physical range before the limits; a value must be a JSON number.
Plus the collection dates (identity) that the same issue names."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gmp_mes.clock import utcnow
from gmp_mes.errors import ValidationFailed
from processes.definitions import QcSpec
from tests.conftest import sig
from tests.helpers import assert_problem, count
from tests.test_pages_core import csrf_from, page_login
from tests.test_qc_fixtures import (  # noqa: F401 - fixtures
    Lab,
    lab_fixture,
    plant_fixture,
)


def _post(api: Any, number: str, **body: Any) -> Any:
    return api.post(f"/api/v1/batches/{number}/qc-results", json={"signature": sig(), **body})


@pytest.mark.requirement("EU GMP Annex 11 §6")
def test_free_text_outcome_and_negative_value_are_422_field_errors(lab: Lab, login, db) -> None:
    number = lab.made()
    api = login(lab.analyst)
    problem = assert_problem(_post(api, number, test="mycoplasma", outcome="Negatve"), 422,
                             "validation_error")
    assert list(problem["errors"]) == ["outcome"]
    assert "negative, positive, invalid" in problem["errors"]["outcome"][0]
    assert_problem(_post(api, number, test="sterility", outcome="no growth seen"), 422)
    # Endotoxin -5 EU/mL would pass a max-only specification: refused before the limits.
    problem = assert_problem(_post(api, number, test="endotoxin", value=-5), 422)
    assert list(problem["errors"]) == ["value"] and "negative" in problem["errors"]["value"][0]
    problem = assert_problem(_post(api, number, test="viability", value=120.0), 422)
    assert "0 and 100" in problem["errors"]["value"][0]
    problem = assert_problem(_post(api, number, test="dose", value=1e308), 422)
    assert list(problem["errors"]) == ["value"]
    # A number of 400 digits is refused by the edge before any schema (JSON numbers are
    # capped in length there: gmp_mes.edge).
    assert_problem(_post(api, number, test="dose", value=10**400), 400, "malformed_body")
    # A value that is a string is refused, not read as a number.
    problem = assert_problem(_post(api, number, test="endotoxin", value="2.5"), 422)
    assert list(problem["errors"]) == ["value"]
    assert_problem(_post(api, number, test="endotoxin", value=True), 422)
    assert count(db, "qc_result") == 0
    # The choices are accepted in any case and stored as written in the spec.
    response = _post(api, number, test="mycoplasma", outcome=" Negative ")
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["outcome"] == "negative" and response.get_json()["passed"]
    overview = api.get(f"/api/v1/batches/{number}/qc").get_json()
    rows = {t["test"]: t for t in overview["tests"]}
    assert rows["sterility"]["outcomes"] == ["negative", "positive", "invalid"]
    assert rows["endotoxin"]["outcomes"] == []


def test_invalid_outcome_keeps_the_test_open_for_a_retest(lab: Lab) -> None:
    number = lab.made()
    first, passed = lab.result(number, "mycoplasma", fields={"outcome": "invalid"})
    assert lab.overview(number)["mycoplasma"]["results"][0]["id"] == first
    assert passed is False
    row = lab.overview(number)["mycoplasma"]
    assert row["status"] == "pending" and row["invalid"] == 1 and not row["failed"]
    assert row["results"][0]["invalid"] is True
    second, passed = lab.result(number, "mycoplasma", fields={"outcome": "negative"})
    assert passed is True and lab.overview(number)["mycoplasma"]["current_result_id"] == second


def test_invalid_pending_result_after_conditional_release_blocks_nothing(lab: Lab) -> None:
    number = lab.ready(skip=("sterility",))
    lab.release(number, conditional=True, justification="clinical urgency")
    lab.result(number, "sterility", fields={"outcome": "invalid"})
    assert set(lab.items(number).values()) == {"conditionally_released"}
    assert lab.overview(number)["sterility"]["status"] == "pending"


OUT_OF_RANGE = st.one_of(
    st.floats(max_value=-1e-12, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 1e16]),
)


@given(value=OUT_OF_RANGE, unit=st.sampled_from(["EU/mL", "cells/kg", "pg/mL", "copies/cell",
                                                 "cells", "%", "mL"]))
def test_out_of_range_numbers_are_refused_before_the_limits(value: float, unit: str) -> None:
    """Invariant (Hypothesis): a negative, non-finite or absurd value never gets a
    computed pass or fail, whatever the specification's limits."""
    from qc.services.results import _evaluate

    spec = QcSpec(test="x", unit=unit, max=5.0)
    with pytest.raises(ValidationFailed) as caught:
        _evaluate(spec, value=value, outcome=None, unit=None)
    assert list(caught.value.errors) == ["value"]


@given(value=st.floats(min_value=100.0, exclude_min=True, allow_nan=False))
def test_percentages_above_100_are_refused(value: float) -> None:
    from qc.services.results import _evaluate

    with pytest.raises(ValidationFailed):
        _evaluate(QcSpec(test="viability", unit="%", min=80.0), value=value, outcome=None,
                  unit=None)


def test_qc_entry_page_offers_the_outcomes_as_a_select(lab: Lab, client) -> None:
    number = lab.made()
    page_login(client, lab.analyst)
    html = client.get(f"/qc/{number}").get_data(as_text=True)
    select = html[html.index('<select name="outcome">'):]
    select = select[:select.index("</select>")]
    assert '<optgroup label="sterility">' in select and '<input name="outcome"' not in html
    assert 'value="positive"' in select and 'value="invalid"' in select
    refused = client.post(f"/qc/{number}", data={
        "csrf_token": csrf_from(html), "test": "mycoplasma", "outcome": "negatve",
        "password": lab.analyst.password})
    assert refused.status_code == 422
    assert "must be one of" in refused.get_data(as_text=True)
    negative = client.post(f"/qc/{number}", data={
        "csrf_token": csrf_from(html), "test": "endotoxin", "value": "-5",
        "password": lab.analyst.password})
    assert negative.status_code == 422 and "negative" in negative.get_data(as_text=True)


# --- collections: not before the patient's birth, not decades old -------------------------

def _collection(lab: Lab, login: Any, collected_at: datetime) -> Any:
    from identity import services

    with lab.plant.tx(lab.plant.clinician) as s:
        coi_id = services.enrol_patient(
            s, given_name="Ada", family_name="Byron", date_of_birth=date(2001, 6, 1),
            mrn="DATES-1", treatment_site="HOSP1").coi_id
    return login(lab.plant.operator).post("/api/v1/collections", json={
        "coi_id": coi_id, "collected_at": collected_at.isoformat(), "site": "APH1",
        "volume_ml": 200.0})


@pytest.mark.parametrize("collected_at", [
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(2001, 5, 31, 12, tzinfo=UTC),  # the day before the patient was born
    utcnow() - timedelta(days=11 * 366),
])
def test_impossible_collection_dates_are_field_errors(
    lab: Lab, login, db, collected_at: datetime
) -> None:
    problem = assert_problem(_collection(lab, login, collected_at), 422, "validation_error")
    assert list(problem["errors"]) == ["collected_at"]
    assert count(db, "collection") == 0


def test_a_recent_collection_is_recorded(lab: Lab, login) -> None:
    response = _collection(lab, login, utcnow() - timedelta(hours=3))
    assert response.status_code == 201, response.get_json()
