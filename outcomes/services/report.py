"""The outcome report (SPEC §16): per infused batch of a process, pseudonymised by COI
(no name, date of birth or MRN), the batch's quality attributes (release QC values, dose,
expansion) next to the patient's follow-up (response at each visit, the worst CRS and
ICANS grades), and a plot of one attribute against the best response."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from batches import services as batches
from gmp_mes import charts
from outcomes.models import FollowUpVisit, Response
from outcomes.services.visits import current_records, visit_label
from qc import services as qc

# The best overall response, best first (RECIST/Lugano order); NE is not a response.
RESPONSE_ORDER = (Response.CR, Response.PR, Response.SD, Response.PD)
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
    # Issue 20 (predictive quality): the expansion forecast goes here once that domain,
    # between qc and outcomes, offers it through its services. Always None until then.
    forecast: dict[str, float | None] | None = None


@dataclass(frozen=True)
class OutcomeReport:
    process: str
    visits: list[str]  # every visit code any row has, in due order
    rows: list[OutcomeRow] = field(default_factory=list)

    @property
    def attributes(self) -> list[str]:
        """What the plot may show: ``qc:<test>`` of numeric tests, dose, expansion."""
        tests = sorted({t for r in self.rows for t, v in r.qc.items()
                        if isinstance(v, int | float)})
        return [f"qc:{t}" for t in tests] + ["expansion:fold", "expansion:final_viability"]


def _expansion(batch_number: str, session: Session) -> Expansion:
    batch = batches.get_batch(session, batch_number)
    curve = batches.definition_of_batch(batch).curve
    if curve is None:
        return Expansion()
    points = sorted((r for r in batches.current_records(session, batch)
                     if r.step_code == curve.step), key=lambda r: r.occurrence)
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
        rows.append(OutcomeRow(
            coi_id=coi, batch_number=number, process_version=planned[0].process_version,
            administered_at=planned[0].administered_at, qc=values, qc_units=units,
            dose=dose if isinstance(dose, int | float) else None,
            dose_unit=units.get(DOSE_TEST),
            expansion=_expansion(number, session),
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
