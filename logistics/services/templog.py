"""Temperature logs (SPEC §14): parsing what data loggers export and summarising it.

Pure functions, no database: :func:`parse_csv` and :func:`parse_json` give the readings
(aware UTC times, strictly increasing, finite temperatures), :func:`summarise` the
summary the shipment keeps and shows.

Definitions (EU GDP 9.2 and EU GMP Part IV 6: the transport record must show the
conditions were kept, gaps included):

- an **excursion** is a run of consecutive readings outside the shipment's condition
  ``[min_c, max_c]``: it starts at the first reading outside and ends at the first reading
  back inside (the product was outside for the whole sampling interval before that), or
  at the last reading when the log ends outside; ``minutes`` is end minus start (a single
  reading outside in a log read every minute counts one minute), ``extreme_c`` the reading
  farthest outside the range;
- a **gap** is an interval between two consecutive readings longer than ``GAP_FACTOR``
  (3) times the log's median sampling interval (a logger set to read every minute that
  is silent for more than 3 minutes): ``start`` the last reading before, ``end`` the
  first after. The median is the logger's own cadence, robust to the gaps themselves.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gmp_mes.errors import ValidationFailed

HEADER = ("timestamp", "temperature_c")
GAP_FACTOR = 3.0
# Colder than absolute zero is no reading; hotter than this no logger of a cold chain reads.
LOWEST_C, HIGHEST_C = -273.15, 200.0
MAX_READINGS = 200_000  # 4 months at one reading a minute


class TemperatureLogInvalid(ValidationFailed):
    """422 ``temperature_log_invalid``: the log names the line (CSV) or the reading (JSON)
    that is wrong, and nothing is stored."""

    code = "temperature_log_invalid"


def _invalid(where: str, message: str, **extra: Any) -> TemperatureLogInvalid:
    return TemperatureLogInvalid(f"{where}: {message}", errors={where: [message]}, extra=extra)


@dataclass(frozen=True)
class Readings:
    """Parsed readings: ``times`` aware UTC, strictly increasing; ``temps`` in °C."""

    times: list[datetime]
    temps: list[float]

    def __len__(self) -> int:
        return len(self.times)


@dataclass(frozen=True)
class Excursion:
    start: datetime
    end: datetime
    minutes: float
    extreme_c: float


@dataclass(frozen=True)
class Gap:
    start: datetime
    end: datetime
    minutes: float


@dataclass(frozen=True)
class Summary:
    readings: int
    first_at: datetime
    last_at: datetime
    min_c: float
    max_c: float
    interval_s: float | None  # median sampling interval; None with one reading
    gap_after_s: float | None  # an interval longer than this is a gap
    excursions: list[Excursion] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)

    @property
    def span_minutes(self) -> float:
        return (self.last_at - self.first_at).total_seconds() / 60


def _time(text: str, where: str, **extra: Any) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _invalid(where, f"{text.strip()!r} is not an ISO 8601 time "
                              "(e.g. 2026-03-01T08:00:00Z)", column="timestamp", **extra) from None
    if value.tzinfo is None:
        raise _invalid(where, f"{text.strip()!r} has no UTC offset: the time of a reading "
                              "must say its zone (Z or +01:00)", column="timestamp", **extra)
    if not 1900 <= value.year <= 2999:
        raise _invalid(where, f"{text.strip()!r} is outside 1900-2999", column="timestamp",
                       **extra)
    return value.astimezone(UTC)


def _temperature(value: object, where: str, **extra: Any) -> float:
    if isinstance(value, bool):
        raise _invalid(where, "the temperature must be a number", column="temperature_c",
                       **extra)
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _invalid(where, f"{value!r} is not a temperature in °C (a number, with a "
                              "point)", column="temperature_c", **extra) from None
    if not math.isfinite(number) or not LOWEST_C <= number <= HIGHEST_C:
        raise _invalid(where, f"{value!r} °C is no reading a logger gives "
                              f"({LOWEST_C} to {HIGHEST_C})", column="temperature_c", **extra)
    return number


def _checked(times: list[datetime], where: Sequence[str]) -> None:
    if not times:
        raise _invalid("log", "the log holds no reading")
    if len(times) > MAX_READINGS:
        raise _invalid("log", f"more than {MAX_READINGS:,} readings in one log")
    for i in range(1, len(times)):
        if times[i] <= times[i - 1]:
            raise _invalid(where[i], "the time is not after the previous reading's: a "
                                     "logger's readings are in time order, each once",
                           column="timestamp")


def parse_csv(data: bytes | str) -> Readings:
    """``timestamp,temperature_c`` (a header, then one reading a line, as loggers export);
    blank lines are skipped. 422 naming the line: a wrong header, an unparseable time, a
    non-numeric temperature, a line with another number of fields, readings out of order."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _invalid("file", f"not UTF-8 text (byte {exc.start})") from None
    else:
        text = data.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or tuple(h.strip().lower() for h in header) != HEADER:
        shown = ",".join(header) if header else "nothing"
        raise _invalid("line 1", f"the header must be {','.join(HEADER)} (found {shown!r})",
                       line=1)
    times: list[datetime] = []
    temps: list[float] = []
    lines: list[str] = []
    fromiso = datetime.fromisoformat
    for row in reader:
        if not row:
            continue
        where = f"line {reader.line_num}"
        if len(row) != 2:
            raise _invalid(where, f"expected 2 fields (timestamp,temperature_c), found "
                                  f"{len(row)}", line=reader.line_num)
        stamp, reading = row
        # The fast path first (what loggers write), the careful one names the problem.
        try:
            at = fromiso(stamp)
            utc = at.astimezone(UTC) if at.tzinfo is not None else None
        except ValueError:
            utc = None
        if utc is None or not 1900 <= utc.year <= 2999:
            utc = _time(stamp, where, line=reader.line_num)
        try:
            c = float(reading)
        except ValueError:
            c = math.nan
        if not LOWEST_C <= c <= HIGHEST_C:  # also NaN and the infinities
            c = _temperature(reading, where, line=reader.line_num)
        times.append(utc)
        temps.append(c)
        lines.append(where)
    _checked(times, lines)
    return Readings(times, temps)


def parse_json(readings: object) -> Readings:
    """``[{"at": ISO 8601, "c": number}, ...]``; 422 naming the reading (its index)."""
    if not isinstance(readings, list):
        raise _invalid("readings", "must be a list of {\"at\", \"c\"}")
    times: list[datetime] = []
    temps: list[float] = []
    where: list[str] = []
    for i, entry in enumerate(readings):
        name = f"readings.{i}"
        if not isinstance(entry, dict) or set(entry) != {"at", "c"}:
            raise _invalid(name, "each reading is {\"at\": time, \"c\": °C}", index=i)
        if not isinstance(entry["at"], str):
            raise _invalid(f"{name}.at", "must be an ISO 8601 time", index=i)
        times.append(_time(entry["at"], f"{name}.at"))
        temps.append(_temperature(entry["c"], f"{name}.c"))
        where.append(f"{name}.at")
    _checked(times, where)
    return Readings(times, temps)


def summarise(readings: Readings, min_c: float, max_c: float) -> Summary:
    """The summary of a log against the condition ``[min_c, max_c]`` (module docstring)."""
    times, temps = readings.times, readings.temps
    n = len(times)
    seconds = [t.timestamp() for t in times]
    intervals = [b - a for a, b in itertools.pairwise(seconds)]
    interval = statistics.median(intervals) if intervals else None
    gap_after = GAP_FACTOR * interval if interval else None
    gaps = [] if gap_after is None else [
        Gap(times[i], times[i + 1], d / 60) for i, d in enumerate(intervals) if d > gap_after]
    return Summary(readings=n, first_at=times[0], last_at=times[-1], min_c=min(temps),
                   max_c=max(temps), interval_s=interval, gap_after_s=gap_after,
                   excursions=list(_excursions(times, temps, min_c, max_c)), gaps=gaps)


def _excursions(times: list[datetime], temps: list[float], low: float,
                high: float) -> Iterable[Excursion]:
    start: int | None = None
    extreme = 0.0
    worst = -1.0  # how far outside the range the extreme is
    for i, c in enumerate(temps):
        outside = c < low or c > high
        if outside:
            beyond = low - c if c < low else c - high
            if start is None:
                start, extreme, worst = i, c, beyond
            elif beyond > worst:
                extreme, worst = c, beyond
        elif start is not None:
            yield _excursion(times[start], times[i], extreme)
            start = None
    if start is not None:
        yield _excursion(times[start], times[-1], extreme)


def _excursion(start: datetime, end: datetime, extreme: float) -> Excursion:
    return Excursion(start, end, (end - start).total_seconds() / 60, extreme)


def excursion_minutes(summary: Summary) -> float:
    return sum(e.minutes for e in summary.excursions)
