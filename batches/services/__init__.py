"""Rules of batch manufacturing: batches, step records, deviations (process versions are
the processes domain's).

Services take a session, enforce every rule, flush and never commit. Each
change of a batch locks its row first (SELECT ... FOR UPDATE on PostgreSQL, the
write lock taken at BEGIN IMMEDIATE on SQLite), so two operators recording on
one batch at once are serialised and see each other's records.

Other domains, the pages and the tests reach this one only through the names
re-exported here (``from batches import services; services.get_batch(...)``). The rooms:

- ``batches``: start, find and list batches
- ``steps``: step records as read, the order rule
- ``values``: entered values checked against the parameters
- ``recording``: recording and correcting step records, signed; the dry run
  (``check_step``)
- ``requirements``: what a step needs, asked of the ``registry.step_requirements``
  providers (lots, equipment, ...)
- ``deviations``: deviations, QA's assessment and closure
- ``lifecycle``: the batch state machine (transitions, actions per status)
- ``status``: derived status and QA's release decision
- ``interface``: what qc and identity ask of a batch
- ``scheduler``: deviations open too long
"""

from __future__ import annotations

from batches.services.batches import (
    DEFAULT_PROCESS,
    batch_coi,
    batches_of_coi,
    definition_of_batch,
    find_batch_number,
    get_batch,
    list_batches,
    start_batch,
)
from batches.services.deviations import (
    assess_deviation,
    close_deviation,
    deviations_of,
    get_deviation,
    open_deviation,
)
from batches.services.interface import (
    batch_performers,
    final_product_item_ids,
    is_final,
    qc_specs,
    release_blockers,
)
from batches.services.lifecycle import (
    TRANSITIONS,
    Action,
    allowed_actions,
    correction_open,
    deviation_action,
    recording_open,
)
from batches.services.recording import (
    StepCheckResult,
    StepOutcome,
    VerifierInput,
    check_step,
    correct_step,
    record_step,
    signature_binds,
    signed_content,
)
from batches.services.scheduler import alert_overdue_deviations
from batches.services.status import set_batch_status
from batches.services.steps import (
    StepState,
    all_records,
    current_records,
    last_step_index,
    next_steps,
    paged_step_states,
    recorded_steps,
    step_history_page,
    step_states,
    steps_complete,
)
from batches.services.values import MAX_TEXT
from processes.definitions import INVALID_OUTCOME, MAX_BAGS, QcSpec, normal_outcome

__all__ = [
    "DEFAULT_PROCESS",
    "INVALID_OUTCOME",
    "MAX_BAGS",
    "MAX_TEXT",
    "TRANSITIONS",
    "Action",
    "QcSpec",
    "StepCheckResult",
    "StepOutcome",
    "StepState",
    "VerifierInput",
    "alert_overdue_deviations",
    "all_records",
    "allowed_actions",
    "assess_deviation",
    "batch_coi",
    "batch_performers",
    "batches_of_coi",
    "check_step",
    "close_deviation",
    "correct_step",
    "correction_open",
    "current_records",
    "definition_of_batch",
    "deviation_action",
    "deviations_of",
    "final_product_item_ids",
    "find_batch_number",
    "get_batch",
    "get_deviation",
    "is_final",
    "last_step_index",
    "list_batches",
    "next_steps",
    "normal_outcome",
    "open_deviation",
    "paged_step_states",
    "qc_specs",
    "record_step",
    "recorded_steps",
    "recording_open",
    "release_blockers",
    "set_batch_status",
    "signature_binds",
    "signed_content",
    "start_batch",
    "step_history_page",
    "step_states",
    "steps_complete",
]
