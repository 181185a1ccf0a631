"""Issue 13 in the batches area: the expansion curve inferred as SPEC §3 says when a
definition has no [curve] table, and physical ranges of step values checked before
their limits."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import processes.services as processes
from gmp_mes.errors import ValidationFailed
from processes.definitions import inferred_curve, parse_definition
from tests.test_batches_fixtures import (  # noqa: F401 - fixture
    APHERESIS,
    HOSPITAL,
    Plant,
    good_values,
    plant_fixture,
    sign,
)

# SPEC §3, written exactly as the specification shows it (no [curve] table).
SPEC_EXAMPLE = '''
code = "CART-AUTO"
version = 1
name = "Autologous CAR-T cell product"

[shelf_life]
starting_material = "PT48H"   # collection -> batch start
final_product = "P270D"       # from the step that sets expiry_from = true
post_thaw = "PT3H"            # thaw -> administration
warn_before = ["PT24H", "PT4H"]   # expiry warning alerts

[[steps]]
code = "receipt"
name = "Receipt and identity check of starting material"

[[steps]]
code = "expansion"
name = "Expansion, daily count"
repeatable = true             # one record per day

[[steps.parameters]]
code = "viable_cells"
unit = "cells"
min = 1.0e6

[[steps.parameters]]
code = "viability_pct"
unit = "%"
min = 70.0
max = 100.0

[[steps]]
code = "fill"
name = "Formulation and fill of final product bags"
creates = "final_product"
expiry_from = true

[[qc]]
test = "sterility"
method = "Ph. Eur. 2.6.27"
accept = "negative"             # qualitative
time_to_result = "P7D"
release_before_result = true    # conditional release allowed

[[qc]]
test = "mycoplasma"
method = "Ph. Eur. 2.6.7 (NAT)"
accept = "negative"

[[qc]]
test = "viability"
unit = "%"
min = 80.0

[[qc]]
test = "endotoxin"
unit = "EU/mL"
max = 5.0
'''


def test_spec_example_gets_its_curve_and_keeps_its_digest() -> None:
    definition = parse_definition(tomllib.loads(SPEC_EXAMPLE), "SPEC §3")
    assert definition.curve is not None
    assert (definition.curve.step, definition.curve.viable_cells,
            definition.curve.viability) == ("expansion", "viable_cells", "viability_pct")
    # The stored document keeps what the file says: no [curve] table, so the digest of
    # a definition loaded before this rule does not change.
    assert definition.raw["curve"] is None
    from processes.definitions import from_canonical

    assert from_canonical(definition.raw).curve == definition.curve


def test_an_explicit_curve_wins_and_no_candidate_gives_none() -> None:
    data = tomllib.loads(SPEC_EXAMPLE)
    assert inferred_curve(parse_definition(data, "x").steps[:1]) is None  # receipt only
    data["steps"][1]["repeatable"] = False
    assert parse_definition(data, "x").curve is None  # no repeatable step: no curve


@pytest.fixture
def spec_plant(app: Any, db: Any, make_user: Any, make_site: Any, tmp_path: Path) -> Plant:

    make_site(APHERESIS, "collection")
    make_site(HOSPITAL, "treatment")
    operator = make_user("olga", "operator")
    qa = make_user("quinn", "qa")
    clinician = make_user("clara", "clinician", site=HOSPITAL)
    apheresis = make_user("april", "clinician", site=APHERESIS)
    plant = Plant(app, db, operator, make_user("oscar", "operator"), qa, clinician, apheresis)
    (tmp_path / "spec-example.toml").write_text(SPEC_EXAMPLE)
    with plant.tx(qa) as s:
        processes.load_process_definitions(s, [tmp_path])  # the SPEC example only
    with plant.tx(qa) as s:
        processes.approve_process(s, "CART-AUTO", 1, user_id=qa.user_id,
                                 signature=sign(meaning="approved"))
    return plant


@pytest.mark.requirement("SPEC §3")
def test_a_definition_written_like_spec_3_shows_its_curve(spec_plant: Plant, client) -> None:
    from batches import record
    from tests.test_pages_core import page_login

    plant = spec_plant
    number = plant.start()
    plant.record(number, "receipt", {})
    for cells, viability in ((2.0e8, 95.0), (4.0e8, 93.0), (9.0e8, 91.0)):
        plant.record(number, "expansion", {"viable_cells": cells, "viability_pct": viability})
    with plant.tx() as s:
        data = record.executed_record(s, number)
    assert [p["viable_cells"] for p in data["expansion_curve"]] == [2.0e8, 4.0e8, 9.0e8]
    assert [p["viability"] for p in data["expansion_curve"]] == [95.0, 93.0, 91.0]
    page_login(client, plant.qa)
    html = client.get(f"/batches/{number}").get_data(as_text=True)
    curve = html[html.index("Expansion curve"):]
    # Three counts drawn: the chart's alt text lists each day's cells (gmp_mes.charts).
    assert curve.count('<img class="chart curve"') == 2
    assert all(f"{cells:.0E}".replace("E+0", "E") in curve for cells in (2.0e8, 4.0e8, 9.0e8))
    assert "No expansion records" not in curve


# --- physical ranges of step values -------------------------------------------------------

def _expansion_values(plant: Plant, number: str, **values: Any) -> dict[str, Any]:
    step = plant.definition(number).step("expansion")
    return {**good_values(step), **values}


def _started_to_expansion(plant: Plant) -> str:
    number = plant.start()
    plant.run_to(number, "transduction")
    return number


def test_impossible_step_values_are_refused_with_field_errors(plant: Plant) -> None:
    number = _started_to_expansion(plant)
    cases = [
        ({"viable_cells": -5.0}, "values.viable_cells", "negative"),
        ({"viable_cells": 1e308}, "values.viable_cells", "plausible"),
        ({"viability_pct": 101.0}, "values.viability_pct", "0 and 100"),
        ({"viability_pct": -0.5}, "values.viability_pct", "0 and 100"),
        ({"culture_volume_ml": -1.0}, "values.culture_volume_ml", "negative"),
    ]
    for values, field, words in cases:
        with pytest.raises(ValidationFailed) as caught:
            plant.record(number, "expansion", _expansion_values(plant, number, **values))
        assert list(caught.value.errors) == [field], caught.value.errors
        assert words in caught.value.errors[field][0], caught.value.errors
    with plant.tx() as s:
        from batches import services

        assert services.current_records(s, services.get_batch(s, number))[-1].step_code \
            == "transduction"
    # A value out of limits but physically possible is recorded (and opens a deviation).
    outcome = plant.record(number, "expansion", _expansion_values(plant, number,
                                                                  viability_pct=50.0))
    assert outcome.deviations


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.one_of(
    st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
    st.floats(min_value=1.0000001e13, allow_nan=False, allow_infinity=False),
    st.sampled_from([math.inf, -math.inf, 1e308, -0.001]),
), pct=st.one_of(
    st.floats(max_value=-1e-9, allow_nan=False),
    st.floats(min_value=100.0000001, allow_nan=False),
))
def test_out_of_range_step_values_never_reach_the_record(cells: float, pct: float) -> None:
    """Invariant (Hypothesis): a negative or absurd cell count and a percentage outside
    0-100 are refused by the value check, whatever the limits."""
    from batches.services.values import check_values as _check_values
    from processes.definitions import Parameter, Step

    step = Step(code="expansion", name="x", index=0, repeatable=True, parameters=(
        Parameter(code="viable_cells", name="cells", unit="cells"),
        Parameter(code="viability_pct", name="viability", unit="%"),
    ))
    with pytest.raises(ValidationFailed) as caught:
        _check_values(step, {"viable_cells": cells, "viability_pct": pct})
    assert set(caught.value.errors) == {"values.viable_cells", "values.viability_pct"}


def test_definition_limits_must_be_physically_possible() -> None:
    from processes.definitions import ProcessDefinitionError

    data = tomllib.loads(SPEC_EXAMPLE)
    data["steps"][1]["parameters"][1]["max"] = 120.0
    data["qc"][3]["max"] = -1.0
    with pytest.raises(ProcessDefinitionError) as caught:
        parse_definition(data, "bad.toml")
    names = [name for name, _ in caught.value.errors]
    assert any("viability_pct" in n and n.endswith(".max") for n in names), names
    assert any("endotoxin" in n and n.endswith(".max") for n in names), names
