"""Rules of the outcomes domain (SPEC §16). Other domains and the views reach them only
through the names re-exported here. The rooms:

- ``visits``: the follow-up schedule planned at the administration, a visit's state;
- ``records``: signed follow-up records, computed grades, corrections as new versions;
- ``fhir``: the follow-up as FHIR R5 Observations;
- ``statements``: outcome-agreement statements, signed (``outcomes.agreements``);
- ``report``: the outcome report (quality attributes next to outcomes) and its plot.

Services take a session, flush and never commit; the request, command or job commits.
"""

from __future__ import annotations

from outcomes.services.fhir import OBSERVATION_STATUSES, fhir_follow_up, record_observations
from outcomes.services.records import (
    OVERDUE_KIND,
    Grades,
    grades,
    patient_death,
    record_follow_up,
    record_of,
    versions_of,
)
from outcomes.services.report import (
    DOSE_TEST,
    RESPONSE_ORDER,
    Expansion,
    HarvestForecast,
    OutcomeReport,
    OutcomeRow,
    attribute_value,
    best_response,
    outcome_report,
    response_chart,
    visit_labels,
)
from outcomes.services.statements import (
    AgreementInvalid,
    StatementView,
    agreement_dir,
    agreements,
    evaluate_patient,
    get_agreement,
    get_statement,
    issue_statement,
    statement_pdf,
    statements_of,
)
from outcomes.services.visits import (
    PlannedVisit,
    VisitView,
    anniversary,
    current_records,
    on_administered,
    plan,
    schedule_visits,
    state_of,
    visit_label,
    visits_of,
)

__all__ = [
    "DOSE_TEST",
    "OBSERVATION_STATUSES",
    "OVERDUE_KIND",
    "RESPONSE_ORDER",
    "AgreementInvalid",
    "Expansion",
    "Grades",
    "HarvestForecast",
    "OutcomeReport",
    "OutcomeRow",
    "PlannedVisit",
    "StatementView",
    "VisitView",
    "agreement_dir",
    "agreements",
    "anniversary",
    "attribute_value",
    "best_response",
    "current_records",
    "evaluate_patient",
    "fhir_follow_up",
    "get_agreement",
    "get_statement",
    "grades",
    "issue_statement",
    "on_administered",
    "outcome_report",
    "patient_death",
    "plan",
    "record_follow_up",
    "record_observations",
    "record_of",
    "response_chart",
    "schedule_visits",
    "state_of",
    "statement_pdf",
    "statements_of",
    "versions_of",
    "visit_label",
    "visit_labels",
    "visits_of",
]
