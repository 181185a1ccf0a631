"""Process definition files (SPEC §3): validation, messages, immutability, approval."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gmp_mes.settings import CONFIG_DIR
from processes.definitions import (
    ProcessDefinitionError,
    load_directories,
    load_file,
    parse_definition,
)

DEFAULT = CONFIG_DIR / "processes" / "cart-auto-v1.toml"

MINIMAL = """
code = "TEST-PROC"
version = 1
name = "Test process"

[shelf_life]
starting_material = "PT3S"
final_product = "P1D"
post_thaw = "PT1H"
warn_before = ["PT2S"]

[[steps]]
code = "receipt"
name = "Receipt"

[[steps]]
code = "expansion"
name = "Expansion"
repeatable = true

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
name = "Fill"
creates = "final_product"
expiry_from = true

[[qc]]
test = "sterility"
accept = "negative"
time_to_result = "P7D"
release_before_result = true
"""


def write(tmp_path: Path, text: str, name: str = "proc.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(tmp_path: Path, text: str) -> ProcessDefinitionError:
    path = write(tmp_path, text)
    with pytest.raises(ProcessDefinitionError) as caught:
        load_file(path)
    assert str(path) in str(caught.value)  # every message names the file
    return caught.value


def test_default_process_is_valid_and_realistic() -> None:
    d = load_file(DEFAULT)
    assert (d.code, d.version) == ("CART-AUTO", 1)
    assert [s.code for s in d.steps] == [
        "receipt", "selection", "activation", "transduction", "expansion", "harvest", "fill",
        "cryopreservation",
    ]
    assert d.step("expansion").repeatable
    assert d.step("fill").creates == "final_product" and d.step("fill").expiry_from
    assert d.step("receipt").critical
    qc = {q.test: q for q in d.qc}
    assert qc["sterility"].release_before_result and qc["sterility"].method.startswith(
        "Ph. Eur. 2.6.27")
    assert qc["endotoxin"].max == 5.0 and qc["endotoxin"].unit == "EU/mL"
    assert qc["viability"].min == 80.0
    assert {"mycoplasma", "dose", "identity", "potency"} <= set(qc)
    assert d.starting_material_hold == timedelta(hours=48)
    assert d.final_product_shelf_life == timedelta(days=270)
    assert d.warn_before == ("PT24H", "PT4H")


def test_minimal_with_seconds_durations(tmp_path: Path) -> None:
    d = load_file(write(tmp_path, MINIMAL))
    assert d.starting_material_hold == timedelta(seconds=3)
    assert d.qc[0].time_to_result == timedelta(days=7)


@pytest.mark.requirement("EU GMP Annex 11 §5")
@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        # missing field
        (lambda t: t.replace('name = "Test process"\n', ""), "name", "missing required field"),
        (lambda t: t.replace('code = "receipt"\n', ""), "steps[0].code",
         "missing required field"),
        (lambda t: t.replace('starting_material = "PT3S"\n', ""),
         "shelf_life.starting_material", "missing required field"),
        # wrong type
        (lambda t: t.replace("version = 1", 'version = "one"'), "version",
         "must be a whole number, not a string"),
        (lambda t: t.replace("repeatable = true", 'repeatable = "yes"'),
         "steps[1] (expansion).repeatable", "must be true or false"),
        (lambda t: t.replace("min = 70.0", 'min = "seventy"'),
         "steps[1] (expansion).parameters[1] (viability_pct).min", "must be a number"),
        # bad ISO duration
        (lambda t: t.replace('final_product = "P1D"', 'final_product = "270 days"'),
         "shelf_life.final_product", "not an ISO 8601 duration"),
        (lambda t: t.replace('warn_before = ["PT2S"]', 'warn_before = ["PT2X"]'),
         "shelf_life.warn_before[0]", "not an ISO 8601 duration"),
        (lambda t: t.replace('time_to_result = "P7D"', 'time_to_result = "P1M"'),
         "qc[0] (sterility).time_to_result", "not an ISO 8601 duration"),
        # unknown step reference
        (lambda t: t + '\n[curve]\nstep = "culture"\nviable_cells = "x"\nviability = "y"\n',
         "curve.step", "unknown step 'culture'"),
        (lambda t: t.replace('release_before_result = true',
                             'release_before_result = true\nsample_step = "harvest"'),
         "qc[0] (sterility).sample_step", "unknown step 'harvest'"),
        (lambda t: t + '\n[curve]\nstep = "expansion"\nviable_cells = "cells"\n'
                       'viability = "viability_pct"\n',
         "curve.viable_cells", "has no parameter 'cells'"),
        # duplicate code
        (lambda t: t.replace('code = "fill"', 'code = "receipt"'), "steps[2] (receipt).code",
         "duplicate step code 'receipt'"),
        (lambda t: t.replace('code = "viability_pct"', 'code = "viable_cells"'),
         "steps[1] (expansion).parameters[1] (viable_cells).code",
         "duplicate parameter code"),
        (lambda t: t + '\n[[qc]]\ntest = "sterility"\naccept = "negative"\n',
         "qc[1] (sterility).test", "duplicate QC test"),
        # limits
        (lambda t: t.replace("min = 70.0", "min = 170.0"),
         "steps[1] (expansion).parameters[1] (viability_pct).min",
         "min 170 is greater than max 100"),
        # unknown keys (typos must never be silently ignored)
        (lambda t: t.replace("repeatable = true", "repeatible = true"),
         "steps[1] (expansion).repeatible", "unknown key"),
        (lambda t: t.replace('unit = "%"', 'unit = "%"\nseverity = "catastrophic"'),
         "steps[1] (expansion).parameters[1] (viability_pct).severity", "must be one of"),
    ],
)
def test_malformed_file_names_file_field_and_problem(
    tmp_path: Path, change, field: str, message: str
) -> None:
    error = errors_of(tmp_path, change(MINIMAL))
    matching = [m for f, m in error.errors if f == field]
    assert matching, (field, error.errors)
    assert any(message in m for m in matching), (message, matching)
    assert field in str(error) and message in str(error)


def test_not_toml_names_the_file(tmp_path: Path) -> None:
    error = errors_of(tmp_path, MINIMAL + "\n[[steps]\n")
    assert "not valid TOML" in str(error)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = MINIMAL.replace("version = 1", "version = 0").replace('"PT3S"', '"3 seconds"')
    error = errors_of(tmp_path, text)
    fields = {f for f, _ in error.errors}
    assert {"version", "shelf_life.starting_material"} <= fields


def test_duplicate_code_and_version_across_files(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL, "a.toml")
    write(tmp_path, MINIMAL.replace('name = "Test process"', 'name = "Copy"'), "b.toml")
    with pytest.raises(ProcessDefinitionError, match="already defined in"):
        load_directories([tmp_path])


def test_digest_ignores_comments_but_not_substance(tmp_path: Path) -> None:
    a = load_file(write(tmp_path, MINIMAL, "a.toml"))
    b = load_file(write(tmp_path, "# a comment\n" + MINIMAL, "b.toml"))
    c = load_file(write(tmp_path, MINIMAL.replace("min = 70.0", "min = 75.0"), "c.toml"))
    assert a.digest == b.digest != c.digest


@given(st.text(max_size=40))
def test_any_duration_text_is_refused_or_parsed_never_crashes(text: str) -> None:
    data = tomllib.loads(MINIMAL)
    data["shelf_life"]["final_product"] = text
    try:
        d = parse_definition(data, "fuzz.toml")
    except ProcessDefinitionError as exc:
        assert any(f == "shelf_life.final_product" for f, _ in exc.errors)
    else:
        assert d.final_product_shelf_life > timedelta(0)


@given(st.dictionaries(st.sampled_from(["code", "name", "unit", "min", "max", "type",
                                        "expected", "required", "severity", "bogus"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                 st.text(max_size=8), st.lists(st.integers(), max_size=2)),
                       max_size=9))
def test_random_parameter_tables_never_crash(table: dict) -> None:
    data = tomllib.loads(MINIMAL)
    data["steps"][1]["parameters"].append({k: v for k, v in table.items() if v is not None})
    try:
        parse_definition(data, "fuzz.toml")
    except ProcessDefinitionError as exc:
        assert all(isinstance(f, str) and isinstance(m, str) for f, m in exc.errors)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6,
)


@given(st.sampled_from(["receipt", "expansion", "fill", "cryopreservation"]),
       st.dictionaries(st.sampled_from(["temperature_c", "viable_cells", "viability_pct",
                                        "coi_verified", "bags", "dmso_pct", "x", "volume_ml"]),
                       JSON_VALUES | st.fixed_dictionaries({"value": JSON_VALUES,
                                                            "unit": JSON_VALUES}),
                       max_size=6))
def test_any_entered_values_are_checked_never_crash(step_code: str, values: dict) -> None:
    """Random input: refused with field errors, or accepted and evaluated exactly."""
    from batches.services.values import check_values as _check_values
    from gmp_mes.errors import ValidationFailed

    step = load_file(DEFAULT).step(step_code)
    try:
        clean, results, bags = _check_values(step, values)
    except ValidationFailed as exc:
        assert exc.errors and all(k.startswith("values.") for k in exc.errors)
        return
    assert 1 <= bags <= 20
    for result in results:
        param = step.parameter(result["code"])
        assert result["in_limits"] == param.within_limits(clean[param.code])
    assert {p.code for p in step.parameters if p.required} <= set(clean)
