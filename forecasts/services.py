"""Rules of the forecasts domain (SPEC §15): a batch's expansion forecast, control charts
across the batches of a process, and the alerts both raise.

Lower domains are read through their services only: batches (the batch, its current step
records, its process definition) and qc (the current numeric results). Forecasts and
charts advise people: nothing here changes a status; the only writes are alerts
(``gmp_mes.alerts``, audited, one per cause).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

import processes.services as processes
from batches import services as batches
from forecasts import model
from forecasts.model import (
    MIN_BASELINE,
    RULES,
    GrowthForecast,
    Limits,
    control_chart,
    fit_growth,
)
from gmp_mes import charts
from gmp_mes.alerts import AlertSpec, Severity, raise_alert, raise_alerts
from gmp_mes.errors import NotFound, field_error
from gmp_mes.registry import ForecastOverlay
from processes.definitions import ForecastSpec, ProcessDefinition, fmt_number
from qc import services as qc

if TYPE_CHECKING:  # types only, as qc does: the rows come from batches' services
    from batches.models import Batch, StepRecord

FORECAST_ALERT = "forecast_below_target"
TREND_ALERT = "trend_violation"
# The batch statuses whose expansion is still running (a forecast can still be acted on).
FORECAST_STATUSES = ("in_process", "on_hold")
RELEASED = "released"  # only fully released batches set a control chart's limits
MAX_POINTS = 100  # a control chart shows the newest 100 batches of the process


# --- the forecast of one batch ---------------------------------------------------------

@dataclass(frozen=True)
class BatchForecast:
    batch_number: str
    process_code: str
    process_version: int
    site_code: str
    status: str
    spec: ForecastSpec | None
    forecast: GrowthForecast | None  # None: the process declares no [forecast]
    days: tuple[float, ...] = ()
    counts: tuple[float, ...] = ()

    @property
    def model(self) -> str | None:
        return self.forecast.model if self.forecast else None

    @property
    def reason(self) -> str | None:
        if self.forecast is None:
            return (f"process {self.process_code} version {self.process_version} declares "
                    "no [forecast]")
        return self.forecast.reason

    @property
    def below_alert(self) -> bool:
        return bool(self.spec and self.forecast and self.forecast.p_target is not None
                    and self.forecast.p_target < self.spec.alert_below)


def counts_of(spec: ForecastSpec, started_at: datetime,
              records: Iterable[StepRecord]) -> tuple[list[float], list[float]]:
    """(culture days, counts) of the forecast step's current records, by occurrence."""
    days: list[float] = []
    counts: list[float] = []
    for record in sorted((r for r in records if r.step_code == spec.step),
                         key=lambda r: r.occurrence):
        value = record.values.get(spec.parameter)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if spec.day_parameter:
            day = record.values.get(spec.day_parameter)
            if not isinstance(day, int | float) or isinstance(day, bool):
                continue
        else:
            day = (record.performed_at - started_at).total_seconds() / 86400
        days.append(float(day))
        counts.append(float(value))
    return days, counts


def batch_forecast(session: Session, batch_number: str) -> BatchForecast:
    """SPEC §15 ``GET /batches/{n}/forecast``: NotFound for an unknown batch."""
    batch = batches.get_batch(session, batch_number)
    return forecast_of(batch, batches.current_records(session, batch))


def forecast_of(batch: Batch, records: Iterable[StepRecord], *,
                before_harvest: bool = False) -> BatchForecast:
    """The forecast of ``batch`` from its current step records (as
    ``batches.current_records`` gives them: a caller that already holds them, such as the
    outcome report, fits without reading them again). ``before_harvest``: only the counts
    taken before the harvest day, the forecast as it stood at the last count before
    harvest (what people could act on), not one fitted on the harvest count itself."""
    definition = batches.definition_of_batch(batch)
    spec = definition.forecast
    base = {"batch_number": batch.batch_number, "process_code": batch.process_code,
            "process_version": batch.process_version, "site_code": batch.site_code,
            "status": batch.status, "spec": spec}
    if spec is None:
        return BatchForecast(forecast=None, **base)  # type: ignore[arg-type]
    days, counts = counts_of(spec, batch.started_at, records)
    if before_harvest:
        kept = [(d, c) for d, c in zip(days, counts, strict=True) if d < spec.harvest_day]
        days, counts = [d for d, _ in kept], [c for _, c in kept]
    fit = fit_growth(days, counts, target=spec.target, harvest_day=spec.harvest_day)
    return BatchForecast(forecast=fit, days=tuple(days), counts=tuple(counts),
                         **base)  # type: ignore[arg-type]


def _cells(value: float) -> str:
    return fmt_number(float(f"{value:.3g}"))


def summary(result: BatchForecast) -> str:
    """One line a person reads: the model, the interval, the probability."""
    fit = result.forecast
    if fit is None or fit.model is None or fit.predicted is None:
        return f"No forecast: {result.reason}."
    p = fit.predicted
    doubling = (f", doubling time {fit.doubling_time_h:.0f} h" if fit.doubling_time_h
                else ", not growing")
    return (f"{fit.model.capitalize()} model from {fit.points} counts{doubling}: day "
            f"{fmt_number(fit.harvest_day)} {_cells(p.median)} cells (90 % prediction "
            f"interval {_cells(p.low)} - {_cells(p.high)}); probability of reaching "
            f"{_cells(fit.target)}: {fit.p_target:.0%}.")


def overlay(session: Session, batch_number: str) -> ForecastOverlay | None:
    """The ``registry.expansion_forecast`` provider: the band drawn on the batch's
    expansion chart, the target line and the summary."""
    result = batch_forecast(session, batch_number)
    fit = result.forecast
    if fit is None:
        return None
    target = charts.Line(fit.target, f"target {_cells(fit.target)} by day "
                                     f"{fmt_number(fit.harvest_day)}", "target")
    if fit.model is None or not fit.band:
        return ForecastOverlay(lines=(target,), notes=(summary(result),))
    days = [b.day for b in fit.band]
    return ForecastOverlay(
        bands=(charts.Band("90 % prediction interval", days, [b.low for b in fit.band],
                           [b.high for b in fit.band]),),
        series=(charts.Series(f"forecast ({fit.model})", days,
                              [b.median for b in fit.band], "line"),),
        lines=(target,), notes=(summary(result),))


def forecast_alert(result: BatchForecast) -> AlertSpec | None:
    """One ``forecast_below_target`` alert per batch (the cause names only the batch)."""
    if not result.below_alert or result.status not in FORECAST_STATUSES:
        return None
    assert result.spec is not None and result.forecast is not None
    return AlertSpec(
        cause=f"{FORECAST_ALERT}:{result.batch_number}", kind=FORECAST_ALERT,
        severity=Severity.MAJOR.value, subject_type="batch", subject_id=result.batch_number,
        message=f"batch {result.batch_number}: the forecast gives "
                f"{result.forecast.p_target:.0%} probability of reaching "
                f"{_cells(result.spec.target)} cells by day "
                f"{fmt_number(result.spec.harvest_day)} (alert under "
                f"{result.spec.alert_below:.0%}). {summary(result)} Plan a re-collection "
                "or a longer culture; the batch status is unchanged.",
        roles=("qa", "operator"), site_code=result.site_code)


def sweep_forecasts(session: Session) -> list[str]:
    """Raise the forecast alerts of every running batch whose process declares a
    forecast; one line per new alert."""
    lines = []
    for batch in batches.list_batches(session, statuses=FORECAST_STATUSES):
        if batches.definition_of_batch(batch).forecast is None:
            continue
        spec = forecast_alert(batch_forecast(session, batch.batch_number))
        if spec is not None and raise_alert(session, spec) is not None:
            lines.append(f"forecast below target: {batch.batch_number}")
    return lines


# --- control charts across batches -----------------------------------------------------

@dataclass(frozen=True)
class Attribute:
    key: str  # "qc:<test>" or "step:<step>.<parameter>"
    label: str
    unit: str


@dataclass(frozen=True)
class TrendPoint:
    batch_number: str
    started_at: datetime
    status: str
    site_code: str
    value: float
    moving_range: float | None
    baseline: bool  # a released batch: the limits rest on it
    rules: tuple[int, ...]


@dataclass(frozen=True)
class TrendChart:
    process_code: str
    attribute: Attribute
    points: tuple[TrendPoint, ...]
    limits: Limits | None
    reason: str | None
    min_baseline: int = MIN_BASELINE

    @property
    def violations(self) -> list[tuple[TrendPoint, int]]:
        return [(p, rule) for p in self.points for rule in p.rules]


def _versions(session: Session, code: str) -> list[ProcessDefinition]:
    found = [processes.definition_of(v) for v in processes.list_processes(session)
             if v.code == code]
    if not found:
        raise NotFound(f"no process {code}")
    return found


def attributes(session: Session, code: str) -> list[Attribute]:
    """Every numeric QC test and numeric step parameter of any version of the process,
    newest version's wording first."""
    seen: dict[str, Attribute] = {}
    for definition in reversed(_versions(session, code)):
        for step in definition.steps:
            for p in step.parameters:
                key = f"step:{step.code}.{p.code}"
                if p.numeric and key not in seen:
                    seen[key] = Attribute(key, f"{step.name}: {p.name}", p.unit)
        for spec in definition.qc:
            key = f"qc:{spec.test}"
            if spec.accept is None and key not in seen:
                seen[key] = Attribute(key, f"QC {spec.test}", spec.unit or "")
    return sorted(seen.values(), key=lambda a: (not a.key.startswith("qc:"), a.key))


def _attribute(session: Session, code: str, key: str) -> Attribute:
    found = {a.key: a for a in attributes(session, code)}
    if key not in found:
        raise field_error("attribute", f"{key!r} is no numeric QC result (qc:<test>) or "
                                       f"step parameter (step:<step>.<parameter>) of {code}")
    return found[key]


def _values_of(session: Session, batch: Batch,
               wanted: list[Attribute]) -> dict[str, float]:
    """The batch's value of each wanted attribute: the current record of the step's last
    occurrence, the current QC result."""
    out: dict[str, float] = {}
    steps = [a for a in wanted if a.key.startswith("step:")]
    if steps:
        last: dict[str, StepRecord] = {}
        for record in batches.current_records(session, batch):
            held = last.get(record.step_code)
            if held is None or record.occurrence > held.occurrence:
                last[record.step_code] = record
        for a in steps:
            step_code, parameter = a.key[5:].split(".", 1)
            found = last.get(step_code)
            value = found.values.get(parameter) if found is not None else None
            if isinstance(value, int | float) and not isinstance(value, bool) \
                    and math.isfinite(value):
                out[a.key] = float(value)
    if any(a.key.startswith("qc:") for a in wanted):
        tests = {a.key[3:] for a in wanted if a.key.startswith("qc:")}
        for row in qc.qc_overview(session, batch.batch_number):
            if row.test not in tests or row.current_result_id is None:
                continue
            current = next((r for r in row.results if r.id == row.current_result_id), None)
            if current is not None and current.value is not None:
                out[f"qc:{row.test}"] = float(current.value)
    return out


def _charts(session: Session, code: str, wanted: list[Attribute], *,
            only_with_limits: bool = False) -> list[TrendChart]:
    """The charts of ``wanted``; ``only_with_limits`` (the sweep): none at all when too
    few of the batches are released for any limits, without reading their values."""
    _versions(session, code)
    newest = batches.list_batches(session, process_code=code, limit=MAX_POINTS)
    released = sum(1 for b in newest if b.status == RELEASED)
    if only_with_limits and released < model.MIN_BASELINE:
        return []
    rows = [(b, _values_of(session, b, wanted)) for b in reversed(newest)]
    result = []
    for attribute in wanted:
        series = [(b, values[attribute.key]) for b, values in rows if attribute.key in values]
        chart = control_chart([v for _, v in series], [b.status == RELEASED for b, _ in series])
        points = tuple(
            TrendPoint(batch_number=b.batch_number, started_at=b.started_at, status=b.status,
                       site_code=b.site_code, value=v, moving_range=mr,
                       baseline=b.status == RELEASED, rules=rules)
            for (b, v), mr, rules in zip(series, chart.moving_ranges, chart.rules, strict=True))
        result.append(TrendChart(code, attribute, points, chart.limits, chart.reason))
    return result


def trend_chart(session: Session, code: str, attribute: str) -> TrendChart:
    """SPEC §15 ``GET /processes/{code}/control-charts/{attribute}``."""
    return _charts(session, code, [_attribute(session, code, attribute)])[0]


def _trend_cause(code: str, attribute: str, rule: int, batch_number: str) -> str:
    """``trend_violation:<process>:<attribute>:<rule>:<batch>``; an attribute too long for
    the 200 characters of ``alert.cause`` (a long QC test name) is named by its digest."""
    cause = f"{TREND_ALERT}:{code}:{attribute}:{rule}:{batch_number}"
    if len(cause) > 200:
        digest = hashlib.sha256(attribute.encode()).hexdigest()[:24]
        cause = f"{TREND_ALERT}:{code}:sha256-{digest}:{rule}:{batch_number}"
    return cause


def trend_alerts(chart: TrendChart) -> list[AlertSpec]:
    """One ``trend_violation`` alert per attribute, rule and batch."""
    baseline = chart.limits.baseline if chart.limits else 0
    return [AlertSpec(
        cause=_trend_cause(chart.process_code, chart.attribute.key, rule, point.batch_number),
        kind=TREND_ALERT, severity=Severity.WARNING.value, subject_type="batch",
        subject_id=point.batch_number,
        message=f"{chart.process_code} {chart.attribute.label}: batch {point.batch_number} "
                f"({fmt_number(point.value)} {chart.attribute.unit}) breaks Nelson rule "
                f"{rule}, {RULES[rule]} (limits from {baseline} released batches). Review "
                "the trend; no status changed.",
        roles=("qa",), site_code=point.site_code) for point, rule in chart.violations]


def sweep_trends(session: Session) -> list[str]:
    """Raise the trend alerts of every attribute of every process; one line per new
    alert."""
    specs: list[AlertSpec] = []
    for code in sorted({v.code for v in processes.list_processes(session)}):
        for chart in _charts(session, code, attributes(session, code), only_with_limits=True):
            specs.extend(trend_alerts(chart))
    new = raise_alerts(session, specs) if specs else []
    return [f"trend violation alert {id_}" for id_ in new]
