"""Temperature logs as loggers export them (SPEC §14): parsing and the summary, without
a database. The summary's definitions are in ``logistics.services.templog``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logistics.services import templog
from logistics.services.templog import TemperatureLogInvalid, parse_csv, parse_json, summarise

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def csv_of(temps: list[float], *, start: datetime = T0, every: timedelta = timedelta(minutes=1),
           skip: frozenset[int] = frozenset()) -> str:
    lines = ["timestamp,temperature_c"]
    lines += [f"{(start + i * every).isoformat().replace('+00:00', 'Z')},{c}"
              for i, c in enumerate(temps) if i not in skip]
    return "\n".join(lines) + "\n"


@pytest.mark.requirement("EU GDP 9.2")
def test_one_excursion_start_end_minutes_extreme() -> None:
    # -150 °C limit: readings 10..14 are warmer (the extreme -131.5 at 12), 15 is back.
    temps = [-180.0] * 30
    temps[10:15] = [-149.0, -140.2, -131.5, -139.0, -148.9]
    summary = summarise(parse_csv(csv_of(temps)), -196.0, -150.0)
    assert summary.readings == 30 and summary.min_c == -180.0 and summary.max_c == -131.5
    [excursion] = summary.excursions
    assert excursion.start == T0 + timedelta(minutes=10)
    assert excursion.end == T0 + timedelta(minutes=15)  # the first reading back inside
    assert excursion.minutes == 5 and excursion.extreme_c == -131.5
    assert summary.gaps == []


@pytest.mark.requirement("EU GDP 9.2")
def test_a_gap_is_more_than_three_median_intervals() -> None:
    # One reading a minute; 4 readings lost after 08:20 (a 5-minute silence) is a gap,
    # one lost reading (2 minutes) is not.
    text = csv_of([-180.0] * 60, skip=frozenset({5, 21, 22, 23, 24}))
    summary = summarise(parse_csv(text), -196.0, -150.0)
    assert summary.interval_s == 60 and summary.gap_after_s == 180
    [gap] = summary.gaps
    assert gap.start == T0 + timedelta(minutes=20) and gap.end == T0 + timedelta(minutes=25)
    assert gap.minutes == 5


def test_an_excursion_running_to_the_end_ends_at_the_last_reading() -> None:
    summary = summarise(parse_csv(csv_of([-180.0, -180.0, -100.0, -90.0])), -196.0, -150.0)
    [excursion] = summary.excursions
    assert (excursion.start, excursion.end) == (T0 + timedelta(minutes=2),
                                                T0 + timedelta(minutes=3))
    assert excursion.extreme_c == -90.0


def test_below_the_range_is_an_excursion_too_and_offsets_become_utc() -> None:
    text = ("timestamp,temperature_c\n2026-03-01T09:00:00+01:00,5\n"
            "2026-03-01T09:01:00+01:00,1.5\n2026-03-01T09:02:00+01:00,4\n")
    readings = parse_csv(text.encode("utf-8-sig"))
    assert readings.times[0] == T0
    [excursion] = summarise(readings, 2.0, 8.0).excursions
    assert excursion.extreme_c == 1.5 and excursion.minutes == 1


@pytest.mark.requirement("21 CFR 11.10(h)")
@pytest.mark.parametrize(("text", "line", "words"), [
    ("time,temp\n2026-03-01T08:00:00Z,-150\n", 1, "header"),
    ("timestamp,temperature_c\n2026-03-01T08:00:00Z,-150\nyesterday,-150\n", 3,
     "ISO 8601"),
    ("timestamp,temperature_c\n2026-03-01T08:00:00Z,-150\n2026-03-01T08:01:00Z,cold\n", 3,
     "not a temperature"),
    ("timestamp,temperature_c\n2026-03-01T08:00:00,-150\n", 2, "UTC offset"),
    ("timestamp,temperature_c\n2026-03-01T08:00:00Z,-150,x\n", 2, "2 fields"),
    ("timestamp,temperature_c\n2026-03-01T08:00:00Z,nan\n", 2, "no reading"),
])
def test_bad_csv_names_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(TemperatureLogInvalid) as refused:
        parse_csv(text)
    assert refused.value.detail.startswith(f"line {line}:") and words in refused.value.detail
    assert refused.value.errors == {f"line {line}": [refused.value.detail.split(": ", 1)[1]]}


def test_readings_out_of_order_and_empty_logs_are_refused() -> None:
    with pytest.raises(TemperatureLogInvalid, match="line 3: the time is not after"):
        parse_csv("timestamp,temperature_c\n2026-03-01T08:01:00Z,1\n2026-03-01T08:00:00Z,1\n")
    with pytest.raises(TemperatureLogInvalid, match="no reading"):
        parse_csv("timestamp,temperature_c\n\n")
    with pytest.raises(TemperatureLogInvalid, match=r"readings.1.c"):
        parse_json([{"at": "2026-03-01T08:00:00Z", "c": 1}, {"at": "2026-03-01T08:01:00Z",
                                                             "c": "warm"}])


readings = st.lists(
    st.tuples(st.integers(min_value=1, max_value=600),  # seconds since the previous reading
              st.floats(min_value=-200, max_value=40, allow_nan=False)),
    min_size=1, max_size=300)
conditions = st.tuples(st.floats(min_value=-200, max_value=0), st.floats(min_value=0.1,
                                                                         max_value=40))


@settings(max_examples=200, deadline=None)
@given(readings, conditions)
def test_summary_invariants(steps: list[tuple[int, float]], condition: tuple[float, float]
                            ) -> None:
    """Excursions never overlap, lie inside the log and add up to at most its span; every
    reading outside the condition lies in one; min <= max; gaps are longer than the
    threshold; CSV and JSON give the same summary."""
    low, high = condition
    times, at = [], T0
    for seconds, _ in steps:
        at += timedelta(seconds=seconds)
        times.append(at)
    temps = [c for _, c in steps]
    text = "timestamp,temperature_c\n" + "".join(
        f"{t.isoformat()},{c!r}\n" for t, c in zip(times, temps, strict=True))
    summary = summarise(parse_csv(text), low, high)
    assert summary.min_c <= summary.max_c and summary.readings == len(steps)
    assert templog.excursion_minutes(summary) <= summary.span_minutes + 1e-9
    previous_end = None
    for e in summary.excursions:
        assert summary.first_at <= e.start <= e.end <= summary.last_at
        assert not low <= e.extreme_c <= high
        assert previous_end is None or e.start >= previous_end
        previous_end = e.end
    for t, c in zip(times, temps, strict=True):
        if not low <= c <= high:
            assert any(e.start <= t <= e.end for e in summary.excursions), t
    for g in summary.gaps:
        assert summary.gap_after_s is not None
        assert g.minutes * 60 > summary.gap_after_s
    as_json = parse_json([{"at": t.isoformat(), "c": c} for t, c in zip(times, temps,
                                                                         strict=True)])
    assert summarise(as_json, low, high) == summary
