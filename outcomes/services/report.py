"""The outcome report (SPEC §16): per infused batch of a process, pseudonymised by COI
(no name, date of birth or MRN), the batch's quality attributes (release QC values, dose,
expansion) next to the patient's follow-up (response at each visit, the worst CRS and
ICANS grades), and a plot of one attribute against the best response."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from batches import services as batches
from forecasts import services as forecasts
from gmp_mes import charts
from outcomes.models import FollowUpVisit, Response
from outcomes.services.visits import current_records, visit_label
from qc import services as qc

if TYPE_CHECKING:  # types only: the rows come from batches' services
    from batches.models import Batch, StepRecord

# The best overall response, best first (RECIST/Lugano order); NE is not a response.
RESPONSE_ORDER = (Response.CR, Response.PR, Response.SD, Response.PD)
FORECAST_ATTRIBUTES = ("p_target", "doubling_time_h", "predicted_median")
DOSE_TEST = "dose"  # the release test that states the dose (CART-AUTO: CAR-T cells/kg)


@dataclass(frozen=True)
class Expansion:
    """The expansion curve summarised: counts, culture days, first and last viable cells,
    fold expansion (last / first) and the last viability."""

    counts: int = 0
    days: float | None = None
    first_viable_cells: float | None = None
    last_viable_cells: float | None = None
    fold: float | None = None
    final_viability: float | None = None


@dataclass(frozen=True)
class HarvestForecast:
    """The expansion forecast (SPEC §15) as it stood at the last count before the harvest
    day: what the batch was expected to reach, next to what the patient then did. The
    harvest count itself is left out (a forecast fitted on it would predict nothing).
    ``model`` None: no forecast, ``reason`` says why (fewer than 3 counts before harvest)."""

    model: str | None
    reason: str | None
    points: int  # counts before the harvest day the fit rests on
    as_of_day: float | None  # culture day of the last of them
    harvest_day: float
    target: float
    doubling_time_h: float | None = None
    predicted_median: float | None = None  # cells at the harvest day
    predicted_low: float | None = None  # the 90 % prediction interval
    predicted_high: float | None = None
    p_target: float | None = None  # probability of reaching target by harvest_day

    @property
    def summary(self) -> str:
        """One line for the page: the model, doubling time, median and probability."""
        if self.model is None or self.predicted_median is None or self.p_target is None:
            return f"none: {self.reason}"
        doubling = (f"doubling {self.doubling_time_h:.0f} h" if self.doubling_time_h
                    else "not growing")
        return (f"{self.model} from {self.points} counts to day {self.as_of_day:g}, "
                f"{doubling}; day {self.harvest_day:g}: {self.predicted_median:.3g} cells; "
                f"P(≥ {self.target:.3g}) {self.p_target:.0%}")


@dataclass(frozen=True)
class OutcomeRow:
    coi_id: str
    batch_number: str
    process_version: int
    administered_at: datetime
    qc: dict[str, float | str | None]  # test -> the current result's value or outcome
    qc_units: dict[str, str | None]
    dose: float | None
    dose_unit: str | None
    expansion: Expansion
    responses: dict[str, str]  # visit code -> response
    best_response: str | None
    worst_crs_grade: int | None
    worst_icans_grade: int | None
    alive: bool | None  # at the latest record
    forecast: HarvestForecast | None = None  # None: the batch's process declares none


@dataclass(frozen=True)
class OutcomeReport:
    process: str
    visits: list[str]  # every visit code any row has, in due order
    rows: list[OutcomeRow] = field(default_factory=list)

    @property
    def attributes(self) -> list[str]:
        """What the plot may show: ``qc:<test>`` of numeric tests, dose, expansion, and
        the forecast before harvest where a batch's process declares one."""
        tests = sorted({t for r in self.rows for t, v in r.qc.items()
                        if isinstance(v, int | float)})
        forecast = (["forecast:p_target", "forecast:doubling_time_h"]
                    if any(r.forecast is not None for r in self.rows) else [])
        return ([f"qc:{t}" for t in tests] + ["expansion:fold", "expansion:final_viability"]
                + forecast)


def _expansion(batch: Batch, records: list[StepRecord]) -> Expansion:
    curve = batches.definition_of_batch(batch).curve
    if curve is None:
        return Expansion()
    points = sorted((r for r in records if r.step_code == curve.step),
                    key=lambda r: r.occurrence)
    cells = [p.values.get(curve.viable_cells) for p in points]
    cells = [float(c) for c in cells if isinstance(c, int | float)]
    viability = [p.values.get(curve.viability) for p in points]
    viability = [float(v) for v in viability if isinstance(v, int | float)]
    if not points:
        return Expansion()
    days = (points[-1].performed_at - batch.started_at).total_seconds() / 86400
    first, last = (cells[0], cells[-1]) if cells else (None, None)
    return Expansion(counts=len(points), days=round(days, 2), first_viable_cells=first,
                     last_viable_cells=last,
                     fold=round(last / first, 3) if first and last is not None else None,
                     final_viability=viability[-1] if viability else None)


def _forecast(batch: Batch, records: list[StepRecord]) -> HarvestForecast | None:
    """forecasts' own fit (``forecasts.services.forecast_of``) on the records already read
    for the expansion: one fit per batch, no second read of its records."""
    result = forecasts.forecast_of(batch, records, before_harvest=True)
    fit = result.forecast
    if fit is None:
        return None
    p = fit.predicted
    return HarvestForecast(
        model=fit.model, reason=fit.reason, points=fit.points,
        as_of_day=round(result.days[-1], 3) if result.days else None,
        harvest_day=fit.harvest_day, target=fit.target,
        doubling_time_h=None if fit.doubling_time_h is None else round(fit.doubling_time_h, 2),
        predicted_median=None if p is None else float(f"{p.median:.4g}"),
        predicted_low=None if p is None else float(f"{p.low:.4g}"),
        predicted_high=None if p is None else float(f"{p.high:.4g}"),
        p_target=None if fit.p_target is None else round(fit.p_target, 4))


def _qc_values(session: Session, batch_number: str
               ) -> tuple[dict[str, float | str | None], dict[str, str | None]]:
    values: dict[str, float | str | None] = {}
    units: dict[str, str | None] = {}
    for row in qc.qc_overview(session, batch_number):
        current = next((r for r in row.results if r.id == row.current_result_id), None)
        values[row.test] = None if current is None else (
            current.value if current.value is not None else current.outcome)
        units[row.test] = row.unit
    return values, units


def best_response(responses: list[str]) -> str | None:
    ranked = [r for r in RESPONSE_ORDER if r.value in responses]
    return ranked[0].value if ranked else None


def outcome_report(session: Session, process_code: str) -> OutcomeReport:
    """Every infused batch of the process with a follow-up schedule, oldest infusion first."""
    code = process_code.strip().upper()
    visits = list(session.scalars(select(FollowUpVisit).where(FollowUpVisit.process_code == code)
                                  .order_by(FollowUpVisit.administered_at, FollowUpVisit.seq)))
    by_batch: dict[str, list[FollowUpVisit]] = {}
    for visit in visits:
        by_batch.setdefault(visit.batch_number, []).append(visit)
    codes: list[str] = []
    for visit in sorted(visits, key=lambda v: v.due_at - v.administered_at):
        if visit.visit not in codes:
            codes.append(visit.visit)
    rows = []
    records_of: dict[str, list] = {}
    for number, planned in by_batch.items():
        coi = planned[0].coi_id
        if coi not in records_of:
            records_of[coi] = current_records(session, coi)
        records = [r for r in records_of[coi] if r.batch_number == number]
        values, units = _qc_values(session, number)
        crs = [r.crs_grade for r in records if r.crs_grade is not None]
        icans = [r.icans_grade for r in records if r.icans_grade is not None]
        latest = max(records, key=lambda r: (r.assessed_at, r.id)) if records else None
        dose = values.get(DOSE_TEST)
        batch = batches.get_batch(session, number)
        step_records = batches.current_records(session, batch)
        rows.append(OutcomeRow(
            coi_id=coi, batch_number=number, process_version=planned[0].process_version,
            administered_at=planned[0].administered_at, qc=values, qc_units=units,
            dose=dose if isinstance(dose, int | float) else None,
            dose_unit=units.get(DOSE_TEST),
            expansion=_expansion(batch, step_records),
            forecast=_forecast(batch, step_records),
            responses={r.visit: r.response for r in records},
            best_response=best_response([r.response for r in records]),
            worst_crs_grade=max(crs) if crs else None,
            worst_icans_grade=max(icans) if icans else None,
            alive=None if latest is None else latest.alive))
    return OutcomeReport(process=code, visits=codes, rows=rows)


def attribute_value(row: OutcomeRow, attribute: str) -> float | None:
    kind, _, name = attribute.partition(":")
    value: object = None
    if kind == "qc":
        value = row.qc.get(name)
    elif kind == "expansion" and name in ("fold", "final_viability", "days"):
        value = getattr(row.expansion, name)
    elif kind == "forecast" and name in FORECAST_ATTRIBUTES and row.forecast is not None:
        value = getattr(row.forecast, name)
    return float(value) if isinstance(value, int | float) else None


def response_chart(report: OutcomeReport, attribute: str) -> charts.Chart:
    """The attribute of each batch against the patient's best response, one marker series
    per response (x: 1 CR, 2 PR, 3 SD, 4 PD; a batch without a response is left out)."""
    series = []
    for position, response in enumerate(RESPONSE_ORDER, start=1):
        ys = [attribute_value(r, attribute) for r in report.rows
              if r.best_response == response.value]
        ys = [y for y in ys if y is not None]
        if ys:
            series.append(charts.Series(response.value, [position] * len(ys), ys,
                                        style="markers"))
    shown = sum(len(s.y) for s in series)
    return charts.Chart(
        title=f"{report.process}: {attribute} by best response",
        y_label=attribute, x_label="best response (1 CR, 2 PR, 3 SD, 4 PD)",
        series=series,
        alt=f"{attribute} of {shown} batches of {report.process} plotted against the "
            f"patient's best response after infusion",
        notes=(f"{len(report.rows)} infused batches; {shown} with a response and a value",))


def visit_labels(codes: list[str]) -> dict[str, str]:
    return {c: visit_label(c) for c in codes}
