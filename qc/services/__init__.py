"""Rules of QC testing and QA release (SPEC §2, §5; issue 6), one module per room.

Services take a session, enforce every rule, flush and never commit. Every change
of a batch's QC record or release state first locks the batch row through
``batches.services.get_batch(..., for_update=True)`` (SELECT ... FOR UPDATE on
PostgreSQL; on SQLite the write transaction already holds the database lock from
BEGIN IMMEDIATE), so a result, a release and a rejection of one batch are
serialised and two QA users can never both release it.

Other domains are reached only through their ``services`` packages (batches and identity
are below qc); the layers above reach qc only through the names re-exported here.

- ``results``: record, correct, review, invalidate a result version
- ``overview``: a batch's tests with status, due time and result versions
- ``release``: the release conditions, release, final release, rejection
- ``conditional``: a result arriving after a conditional release
- ``reads``: decisions, the release queue, the QC work list
- ``states``: the release state rules (which status allows what)
- ``seams``: what qc answers through ``gmp_mes.registry`` (bedside, batch record)
"""

from __future__ import annotations

from qc.services._common import (
    CONDITIONAL_RELEASE_GIVEN,
    FINAL_RELEASE_DUE,
    FINAL_RELEASE_GIVEN,
    INVALID_OUTCOME,
    POSITIVE_AFTER_RELEASE,
    RELEASE_GIVEN,
)
from qc.services.overview import (
    ResultAnswer,
    ResultVersion,
    TestRow,
    TestStatus,
    qc_overview,
    result_version,
    result_view,
)
from qc.services.reads import (
    DECISIVE_KINDS,
    BatchVerdict,
    DecisionOutcome,
    Problem,
    QueueEntry,
    ReleaseState,
    decided_batches,
    decision_outcome,
    decisions_of,
    pending_qc,
    release_decision,
    release_queue,
)
from qc.services.release import ReleaseRefused, reject_batch, release_batch, release_problems
from qc.services.results import invalidate_result, record_result, review_result
from qc.services.seams import batch_record_sections, release_warnings
from qc.services.states import (
    QC_OPEN_STATUSES,
    QUEUE_STATUSES,
    ReleaseAction,
    awaits_final_release,
    decided,
    may_reject,
    qc_open,
)

__all__ = [
    "CONDITIONAL_RELEASE_GIVEN",
    "DECISIVE_KINDS",
    "FINAL_RELEASE_DUE",
    "FINAL_RELEASE_GIVEN",
    "INVALID_OUTCOME",
    "POSITIVE_AFTER_RELEASE",
    "QC_OPEN_STATUSES",
    "QUEUE_STATUSES",
    "RELEASE_GIVEN",
    "BatchVerdict",
    "DecisionOutcome",
    "Problem",
    "QueueEntry",
    "ReleaseAction",
    "ReleaseRefused",
    "ReleaseState",
    "ResultAnswer",
    "ResultVersion",
    "TestRow",
    "TestStatus",
    "awaits_final_release",
    "batch_record_sections",
    "decided",
    "decided_batches",
    "decision_outcome",
    "decisions_of",
    "invalidate_result",
    "may_reject",
    "pending_qc",
    "qc_open",
    "qc_overview",
    "record_result",
    "reject_batch",
    "release_batch",
    "release_decision",
    "release_problems",
    "release_queue",
    "release_warnings",
    "result_version",
    "result_view",
    "review_result",
]
