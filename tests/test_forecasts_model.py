"""Issue 20 (SPEC §15): the statistics of the forecasts domain, on synthetic data with
known truth: growth parameters recovered, too few counts refused with a reason, a flat or
falling culture given a low probability, each Nelson rule 1-4 detected on a series built
to break it and none on a stable one. No database: the fits are pure functions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasts.model import (
    MIN_BASELINE,
    control_chart,
    control_limits,
    fit_growth,
    nelson_rules,
)
from processes.definitions import (
    ProcessDefinitionError,
    from_canonical,
    load_file,
    parse_definition,
)

pytestmark = pytest.mark.requirement("SPEC §15")
CONFIG = Path(__file__).resolve().parent.parent / "config" / "processes"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_exponential_fit_recovers_rate_and_doubling_time(seed: int) -> None:
    rng = np.random.default_rng(seed)
    days = np.arange(2.0, 9.0)
    rate, n0 = 0.30, 1.5e8  # doubling time ln2/0.3 days = 55.5 h
    cells = n0 * np.exp(rate * days + rng.normal(0, 0.05, len(days)))
    fit = fit_growth(days, cells, target=2e9, harvest_day=12)
    assert fit.model == "exponential"
    assert fit.parameters["rate_per_day"] == pytest.approx(rate, abs=0.03)
    assert fit.doubling_time_h == pytest.approx(math.log(2) / rate * 24, rel=0.12)
    truth = n0 * math.exp(rate * 12)
    assert fit.predicted is not None and fit.predicted.level == 0.9
    assert fit.predicted.low < truth < fit.predicted.high
    assert fit.predicted.low < fit.predicted.median < fit.predicted.high
    assert fit.p_target is not None and fit.p_target > 0.9  # 5.5E9 expected, target 2E9
    assert fit.band[0].day == pytest.approx(8) and fit.band[-1].day == pytest.approx(12)


def test_logistic_fit_recovers_the_capacity_once_growth_slows() -> None:
    rng = np.random.default_rng(7)
    days = np.arange(1.0, 12.0)
    capacity, n0, rate = 5e9, 1.5e8, 0.6
    cells = capacity / (1 + (capacity / n0 - 1) * np.exp(-rate * days))
    cells = cells * np.exp(rng.normal(0, 0.03, len(days)))
    fit = fit_growth(days, cells, target=2e9, harvest_day=13)
    assert fit.model == "logistic"
    assert fit.criterion["logistic"] <= fit.criterion["exponential"] - 2
    assert fit.parameters["capacity"] == pytest.approx(capacity, rel=0.1)
    assert fit.parameters["rate_per_day"] == pytest.approx(rate, rel=0.15)
    assert fit.predicted is not None
    assert fit.predicted.low < capacity / (1 + (capacity / n0 - 1) * math.exp(-rate * 13)) \
        < fit.predicted.high
    # Slowing growth: the doubling time at the last count is far longer than at the start.
    assert fit.doubling_time_h is not None and fit.doubling_time_h > math.log(2) / rate * 24 * 3


def test_exponential_data_keep_the_simpler_model() -> None:
    """Straight on the log scale: the logistic's extra parameter buys no AICc margin."""
    rng = np.random.default_rng(11)
    days = np.arange(1.0, 10.0)
    cells = 1e8 * np.exp(0.35 * days + rng.normal(0, 0.04, len(days)))
    assert fit_growth(days, cells, target=2e9, harvest_day=12).model == "exponential"


@pytest.mark.parametrize("counts", [[], [1e8], [1e8, 2e8]])
def test_fewer_than_three_counts_give_no_model_and_a_reason(counts: list[float]) -> None:
    fit = fit_growth(list(range(len(counts))), counts, target=2e9, harvest_day=12)
    assert fit.model is None and fit.predicted is None and fit.p_target is None
    assert fit.reason == f"too few counts: {len(counts)} of the 3 a forecast needs"


def test_counts_of_one_day_give_no_model() -> None:
    fit = fit_growth([3, 3, 3], [1e8, 1.1e8, 0.9e8], target=2e9, harvest_day=12)
    assert fit.model is None and fit.reason == "the counts were all taken on one day"


def test_counts_minutes_apart_give_no_model_instead_of_an_overflow() -> None:
    # Three counts recorded within a minute (as a demo or a data-entry backlog does) would
    # extrapolate a growth rate of thousands per day to the harvest day.
    minutes = [0.0, 30 / 86400, 60 / 86400]
    fit = fit_growth(minutes, [1.5e8, 3.3e8, 7.3e8], target=2e9, harvest_day=12)
    assert fit.model is None and fit.predicted is None
    assert fit.reason == "the counts span 0.0 h: a growth rate needs counts at least 1 day apart"


def test_an_impossible_extrapolation_gives_no_model() -> None:
    fit = fit_growth([0, 0.6, 1.2], [1e6, 1e9, 1e12], target=2e9, harvest_day=12)
    assert fit.model is None and "extrapolate to more than 1E+14 cells" in (fit.reason or "")


@pytest.mark.parametrize("trend", [0.0, -0.08])
def test_a_flat_or_falling_culture_gets_a_low_probability(trend: float) -> None:
    rng = np.random.default_rng(5)
    days = np.arange(1.0, 6.0)
    cells = 1.5e8 * np.exp(trend * days + rng.normal(0, 0.03, len(days)))
    fit = fit_growth(days, cells, target=2e9, harvest_day=12)
    assert fit.model == "exponential"
    assert fit.p_target is not None and fit.p_target < 0.05
    if trend < 0:
        assert fit.doubling_time_h is None
        assert "the counts do not grow: no doubling time" in fit.notes


@settings(max_examples=25, deadline=None)
@given(rate=st.floats(0.05, 0.6), noise=st.floats(0.01, 0.3),
       n=st.integers(3, 9), seed=st.integers(0, 2**16))
def test_interval_and_probability_are_consistent(rate: float, noise: float, n: int,
                                                 seed: int) -> None:
    """Invariant: the probability of reaching the interval's upper end is about 5 %, of its
    lower end about 95 % (one predictive distribution), and probabilities stay in [0, 1]."""
    rng = np.random.default_rng(seed)
    days = np.arange(1.0, 1.0 + n)
    cells = 1e8 * np.exp(rate * days + rng.normal(0, noise, n))
    fit = fit_growth(days, cells, target=2e9, harvest_day=12)
    assert fit.predicted is not None and fit.p_target is not None
    assert 0 <= fit.p_target <= 1
    for target, expected in ((fit.predicted.high, 0.05), (fit.predicted.low, 0.95)):
        again = fit_growth(days, cells, target=target, harvest_day=12)
        assert again.p_target == pytest.approx(expected, abs=0.03)


def test_zero_counts_are_left_out_with_a_note() -> None:
    fit = fit_growth([1, 2, 3, 4], [0, 1e8, 2e8, 4e8], target=2e9, harvest_day=12)
    assert fit.points == 3 and fit.model == "exponential"
    assert "1 count(s) of 0 cells left out" in fit.notes[0]


# --- control charts ------------------------------------------------------------------

STABLE = [10.0, 10.4, 9.7, 10.2, 9.9, 10.3, 9.6, 10.1, 10.0, 9.8, 10.5, 9.9, 10.2, 9.7]


def _rules(values: list[float]) -> list[tuple[int, ...]]:
    return nelson_rules(values, 10.0, 0.3)


def test_a_stable_series_breaks_no_rule() -> None:
    assert all(rules == () for rules in _rules(STABLE))
    chart = control_chart(STABLE, [True] * len(STABLE))
    assert chart.limits is not None and chart.limits.baseline == len(STABLE)
    assert all(rules == () for rules in chart.rules)


def test_rule_1_one_point_beyond_three_sigma() -> None:
    values = [*STABLE[:5], 11.0, *STABLE[5:8]]
    rules = _rules(values)
    assert rules[5] == (1,) and all(1 not in r for i, r in enumerate(rules) if i != 5)


def test_rule_2_nine_points_on_one_side() -> None:
    values = [9.8, 9.7, 10.1, 10.3, 10.2, 10.4, 10.1, 10.2, 10.5, 10.3, 10.2]  # 9 above
    rules = _rules(values)
    assert [i for i, r in enumerate(rules) if 2 in r] == [10]
    assert all(2 not in r for r in _rules(values[:-1]))  # eight are not enough


def test_rule_3_six_points_steadily_rising_or_falling() -> None:
    rising = [10.0, 9.5, 9.6, 9.8, 10.0, 10.1, 10.3]
    assert [i for i, r in enumerate(_rules(rising)) if 3 in r] == [6]
    falling = [10.4 - 0.1 * i for i in range(6)]
    assert [i for i, r in enumerate(_rules(falling)) if 3 in r] == [5]
    assert all(3 not in r for r in _rules(rising[:-1]))


def test_rule_4_fourteen_points_alternating() -> None:
    values = [10.0 + (0.2 if i % 2 else -0.2) for i in range(14)]
    rules = _rules(values)
    assert [i for i, r in enumerate(rules) if 4 in r] == [13]
    assert all(4 not in r for r in _rules(values[:13]))


def test_limits_come_from_the_moving_range_of_the_baseline_only() -> None:
    values = [10.0, 12.0] * 5  # moving range 2 each time
    limits, reason = control_limits(values)
    assert reason is None and limits is not None
    assert limits.centre == pytest.approx(11.0)
    assert limits.sigma == pytest.approx(2 / 1.128, rel=1e-3)  # d2 for n = 2
    assert limits.upper == pytest.approx(11 + 2.66 * 2, rel=1e-3)
    assert limits.mr_upper == pytest.approx(3.267 * 2, rel=1e-3)  # D4
    # An unreleased outlier neither moves the limits nor escapes rule 1.
    chart = control_chart([*values, 30.0], [True] * 10 + [False])
    assert chart.limits == limits and chart.rules[-1] == (1,)


def test_no_limits_on_fewer_released_batches_than_the_minimum() -> None:
    values = STABLE[: MIN_BASELINE + 2]
    chart = control_chart(values, [i < MIN_BASELINE - 1 for i in range(len(values))])
    assert chart.limits is None and all(r == () for r in chart.rules)
    assert chart.reason == (f"limits need at least {MIN_BASELINE} released batches with a "
                            f"value; there are {MIN_BASELINE - 1}")


# --- [forecast] in a process definition ------------------------------------------------

def test_v5_declares_a_forecast_and_earlier_versions_keep_their_digest() -> None:
    v5 = load_file(CONFIG / "cart-auto-v5.toml")
    assert v5.forecast is not None
    assert (v5.forecast.step, v5.forecast.parameter) == ("expansion", "viable_cells")
    assert v5.forecast.target == 2e9 and v5.forecast.harvest_day == 12
    assert v5.forecast.alert_below == 0.2 and v5.forecast.day_parameter is None
    assert from_canonical(v5.raw).digest == v5.digest
    for version in (1, 2, 3, 4):
        older = load_file(CONFIG / f"cart-auto-v{version}.toml")
        assert older.forecast is None and "forecast" not in older.raw


def _with_forecast(table: dict[str, object]) -> dict[str, object]:
    import tomllib

    data = tomllib.loads((CONFIG / "cart-auto-v1.toml").read_text())
    data["forecast"] = table
    return data


def test_a_bad_forecast_table_names_every_problem() -> None:
    with pytest.raises(ProcessDefinitionError) as caught:
        parse_definition(_with_forecast({
            "step": "expansion", "parameter": "viability_pct", "target": -1,
            "alert_below": 1.5, "day_parameter": "nothing", "colour": "red"}), "test")
    names = {name for name, _ in caught.value.errors}
    assert names == {"forecast.colour", "forecast.parameter", "forecast.target",
                     "forecast.harvest_day", "forecast.alert_below", "forecast.day_parameter"}


def test_a_forecast_without_alert_below_defaults_to_one_in_five() -> None:
    parsed = parse_definition(_with_forecast(
        {"step": "expansion", "parameter": "viable_cells", "target": 1e9,
         "harvest_day": 10}), "test")
    assert parsed.forecast is not None and parsed.forecast.alert_below == 0.2
    assert parsed.raw["forecast"]["alert_below"] == 0.2


def test_a_trend_cause_always_fits_the_alert_table() -> None:
    from forecasts.services import _trend_cause

    short = _trend_cause("CART-AUTO", "qc:sterility", 1, "CART-26-0001")
    assert short == "trend_violation:CART-AUTO:qc:sterility:1:CART-26-0001"
    long = _trend_cause("CART-AUTO", "qc:" + "x" * 190, 2, "CART-26-0001")
    assert len(long) <= 200 and long.startswith("trend_violation:CART-AUTO:sha256-")
    assert long != _trend_cause("CART-AUTO", "qc:" + "y" * 190, 2, "CART-26-0001")
