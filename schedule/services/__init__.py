"""The rules of the schedule domain, re-exported from their modules."""

from __future__ import annotations

from schedule.services.timeline import (
    MILESTONES,
    Duration,
    Timeline,
    patient_timeline,
)
from schedule.services.vein_to_vein import (
    PERCENTILE_METHOD,
    PatientRow,
    ProcessSummary,
    VeinToVeinReport,
    distribution_chart,
    failure_chart,
    percentiles,
    vein_to_vein_report,
)

__all__ = [
    "MILESTONES",
    "PERCENTILE_METHOD",
    "Duration",
    "PatientRow",
    "ProcessSummary",
    "Timeline",
    "VeinToVeinReport",
    "distribution_chart",
    "failure_chart",
    "patient_timeline",
    "percentiles",
    "vein_to_vein_report",
]
