"""The vein-to-vein report (SPEC §13): per process, how many patients were infused in a
period, the median and 90th percentile of their vein-to-vein time, and the manufacturing
failure rate (batches rejected of batches decided), pseudonymised by COI.

Definitions (the same as the patient timeline's, ``schedule.services.timeline``):

- A patient counts in the period of their **first administration** (a second bag given
  later does not count them again); their vein-to-vein time runs from their **first
  collection** to that administration, and their process is that of the administered
  batch.
- A batch counts as decided in the period of QA's **first** decision on it (release,
  conditional release or rejection), and as failed when it is rejected by now (a
  conditional release later rejected is a failure of the period it was first decided in).
- The period is whole UTC days, ``from`` to ``to`` inclusive.
- Groups: each process version, and each process code over all its versions
  (``process_version`` None), so a new version can be told from the old and the process
  as a whole is still summarised.
- Percentiles: numpy's default (``method="linear"``, Hyndman and Fan 1996 definition 7,
  as R's ``quantile`` and Excel's ``PERCENTILE.INC``): the median is the usual one; with a
  single patient both figures are their time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Final

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

import identity.services as identity
from batches import services as batches
from gmp_mes import charts
from gmp_mes.clock import utcnow
from gmp_mes.errors import ValidationFailed
from qc import services as qc
from schedule.services.timeline import first_administrations, vein_to_vein

DAY = timedelta(days=1)
DEFAULT_PERIOD = timedelta(days=365)  # without ``from``: the year up to ``to``
MAX_PERIOD = timedelta(days=366 * 20)  # a longer span is a typing error, not a question
PERCENTILE_METHOD: Final = "linear"  # Hyndman and Fan definition 7 (numpy's default)


@dataclass(frozen=True)
class PatientRow:
    coi_id: str
    batch_number: str
    process_code: str
    process_version: int
    collected_at: datetime
    administered_at: datetime
    vein_to_vein: timedelta  # timeline.vein_to_vein of the two

    @property
    def days(self) -> float:
        return self.vein_to_vein.total_seconds() / 86400


@dataclass(frozen=True)
class ProcessSummary:
    process_code: str
    process_version: int | None  # None: every version of the code together
    count: int
    median_days: float | None
    p90_days: float | None
    decided: int
    rejected: int

    @property
    def failure_rate(self) -> float | None:
        return self.rejected / self.decided if self.decided else None

    @property
    def label(self) -> str:
        suffix = "all versions" if self.process_version is None else f"v{self.process_version}"
        return f"{self.process_code} {suffix}"


@dataclass(frozen=True)
class VeinToVeinReport:
    start: date
    end: date  # inclusive
    processes: list[ProcessSummary] = field(default_factory=list)
    patients: list[PatientRow] = field(default_factory=list)

    def days_of(self, summary: ProcessSummary) -> list[float]:
        return [p.days for p in self.patients
                if _member(summary.process_code, summary.process_version,
                           p.process_code, p.process_version)]


def _member(code: str, version: int | None, of_code: str, of_version: int) -> bool:
    """A batch of ``of_code`` version ``of_version`` belongs to the group (code, version);
    version None is every version of the code."""
    return of_code == code and version in (None, of_version)


def percentiles(days: Sequence[float]) -> tuple[float | None, float | None]:
    """(median, 90th percentile) of the values, None for none (method: module doc)."""
    if not days:
        return None, None
    median, p90 = np.percentile(np.asarray(days, dtype=float), [50, 90],
                                method=PERCENTILE_METHOD)
    return float(median), float(p90)


def period(start: date | None, end: date | None) -> tuple[date, date]:
    """The period asked for, checked: ``to`` defaults to today (UTC), ``from`` to a year
    before it; ``from`` after ``to`` or a span over 20 years is 422 naming the field."""
    end = end or utcnow().date()
    start = start or end - DEFAULT_PERIOD
    if start > end:
        raise ValidationFailed("from is after to", errors={"from": ["must not be after to"]})
    if end - start > MAX_PERIOD:
        raise ValidationFailed("the period is too long",
                               errors={"from": ["at most 20 years before to"]})
    return start, end


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return (datetime.combine(start, time(), UTC), datetime.combine(end, time(), UTC) + DAY)


def _patients(session: Session, since: datetime, until: datetime) -> list[PatientRow]:
    bags = identity.final_products().subquery()
    administered = session.execute(
        select(bags.c.coi_id, bags.c.batch_number, bags.c.administered_at)
        .where(bags.c.administered_at.is_not(None), bags.c.administered_at < until))
    infused = {coi: chosen for coi, chosen in first_administrations(administered).items()
               if chosen[1] >= since and chosen[0] is not None}
    collected = identity.first_collected(session, infused)
    rows = []
    for coi_id, (number, at) in infused.items():
        start = collected.get(coi_id)
        delta = vein_to_vein(start, at)
        if number is None or start is None or delta is None:
            continue
        batch = batches.get_batch(session, number)
        rows.append(PatientRow(coi_id, number, batch.process_code, batch.process_version,
                               start, at, delta))
    return sorted(rows, key=lambda r: (r.administered_at, r.coi_id))


def _summaries(patients: list[PatientRow], verdicts: list[tuple[str, int, bool]]
               ) -> list[ProcessSummary]:
    groups = sorted({(p.process_code, p.process_version) for p in patients}
                    | {(code, version) for code, version, _ in verdicts})
    keys: list[tuple[str, int | None]] = []
    for code in sorted({code for code, _ in groups}):
        keys += [(code, None), *[(c, v) for c, v in groups if c == code]]
    out = []
    for code, version in keys:
        days = [p.days for p in patients
                if _member(code, version, p.process_code, p.process_version)]
        decided = [rejected for c, v, rejected in verdicts if _member(code, version, c, v)]
        median, p90 = percentiles(days)
        out.append(ProcessSummary(code, version, len(days), median, p90, len(decided),
                                  sum(decided)))
    return out


def vein_to_vein_report(session: Session, start: date | None = None,
                        end: date | None = None) -> VeinToVeinReport:
    """The report of the period (module doc for every definition)."""
    start, end = period(start, end)
    since, until = _bounds(start, end)
    patients = _patients(session, since, until)
    verdicts = []
    for verdict in qc.decided_batches(session, since, until):
        batch = batches.get_batch(session, verdict.batch_number)
        verdicts.append((batch.process_code, batch.process_version, verdict.rejected))
    return VeinToVeinReport(start, end, _summaries(patients, verdicts), patients)


# --- charts (gmp_mes.charts: the page's SVG images) ---------------------------------------


def distribution_chart(report: VeinToVeinReport) -> charts.Chart:
    """Each patient's vein-to-vein time (days) above their process version, with the
    median and the 90th percentile of each version."""
    groups = [s for s in report.processes if s.process_version is not None]
    each_x: list[float] = []
    each_y: list[float | None] = []
    for position, summary in enumerate(groups, start=1):
        days = report.days_of(summary)
        each_x += [position] * len(days)
        each_y += days
    positions = list(range(1, len(groups) + 1))
    return charts.Chart(
        title="Vein-to-vein time per process", y_label="days", x_label="process",
        x_categories=[s.label for s in groups], y_from_zero=True,
        series=[charts.Series("patient", each_x, each_y, style="markers"),
                charts.Series("median", positions, [s.median_days for s in groups],
                              style="markers"),
                charts.Series("90th percentile", positions, [s.p90_days for s in groups],
                              style="markers")],
        alt=f"Vein-to-vein time in days of {len(report.patients)} patients infused "
            f"{report.start} to {report.end}, per process version, with median and "
            f"90th percentile: "
            + ("; ".join(f"{s.label} median {s.median_days:.1f}" for s in groups
                         if s.median_days is not None) or "none infused"),
        notes=(f"{report.start} to {report.end} (UTC days)",))


def failure_chart(report: VeinToVeinReport) -> charts.Chart:
    """The manufacturing failure rate (%) of each process version with decided batches."""
    groups = [s for s in report.processes
              if s.process_version is not None and s.failure_rate is not None]
    return charts.Chart(
        title="Manufacturing failure rate per process", y_label="% rejected of decided",
        x_label="process", x_categories=[s.label for s in groups], y_from_zero=True,
        series=[charts.Series("failure rate", list(range(1, len(groups) + 1)),
                              [100 * (s.failure_rate or 0) for s in groups], style="bars")],
        alt="Batches rejected of batches decided, in per cent, per process version: "
            + ("; ".join(f"{s.label} {s.rejected} of {s.decided}" for s in groups)
               or "none decided"),
        notes=(f"{report.start} to {report.end} (UTC days)",))
