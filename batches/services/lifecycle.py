"""The batch state machine, stated once: the statuses (``batches.models.BatchStatus``),
the transitions between them, and which actions each status allows. Services enforce
it, the pages ask it (``allowed_actions``) instead of repeating status lists."""

from __future__ import annotations

import enum

from batches.models import ACTIVE_BATCH_STATUSES, FINAL_BATCH_STATUSES, BatchStatus, DeviationStatus


class Action(enum.StrEnum):
    """What can be done to a batch, depending on its status."""

    RECORD_STEP = "record_step"
    CORRECT_STEP = "correct_step"
    REPORT_DEVIATION = "report_deviation"
    RELEASE = "release"


# The status changes QA's decisions make (set_batch_status); in_process, on_hold and
# awaiting_release also follow from steps and deviations (status.refresh_status).
TRANSITIONS: dict[str, frozenset[str]] = {
    BatchStatus.IN_PROCESS: frozenset({
        BatchStatus.ON_HOLD, BatchStatus.AWAITING_RELEASE, BatchStatus.REJECTED}),
    BatchStatus.ON_HOLD: frozenset({
        BatchStatus.IN_PROCESS, BatchStatus.AWAITING_RELEASE, BatchStatus.REJECTED}),
    BatchStatus.AWAITING_RELEASE: frozenset({
        BatchStatus.ON_HOLD, BatchStatus.RELEASED, BatchStatus.CONDITIONALLY_RELEASED,
        BatchStatus.REJECTED}),
    BatchStatus.CONDITIONALLY_RELEASED: frozenset({BatchStatus.RELEASED, BatchStatus.REJECTED}),
    BatchStatus.RELEASED: frozenset(),
    BatchStatus.REJECTED: frozenset(),
}

# Steps are recorded while the batch runs (a hold stops the release, not the work).
_RECORDING = frozenset({BatchStatus.IN_PROCESS, BatchStatus.ON_HOLD})


def recording_open(status: str) -> bool:
    """Steps may be recorded (SPEC §3): in process or on hold."""
    return status in _RECORDING


def correction_open(status: str) -> bool:
    """The record may be corrected until the release decision."""
    return status in ACTIVE_BATCH_STATUSES


def is_final_status(status: str) -> bool:
    return status in FINAL_BATCH_STATUSES


def allowed_actions(status: str) -> frozenset[Action]:
    """The actions a batch in ``status`` allows (roles are the page's and API's concern)."""
    actions = set()
    if recording_open(status):
        actions.add(Action.RECORD_STEP)
    if correction_open(status):
        actions.add(Action.CORRECT_STEP)
    if not is_final_status(status):
        actions.add(Action.REPORT_DEVIATION)
    if BatchStatus.RELEASED in TRANSITIONS.get(status, frozenset()):
        actions.add(Action.RELEASE)
    return frozenset(actions)


def deviation_action(status: str) -> str | None:
    """QA's next signed act on a deviation: assess an open one, close an assessed one."""
    return {DeviationStatus.OPEN: "assess", DeviationStatus.ASSESSED: "close"}.get(
        DeviationStatus(status))
