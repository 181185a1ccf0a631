"""The release state rules (SPEC §5), in one place: which batch statuses keep the QC
record open, wait in QA's queue, take a release, a final release or a rejection. The
services enforce them and the pages ask them (never a status list in a template)."""

from __future__ import annotations

from typing import Literal

# Batches whose QC record is open: results may be entered, corrected, invalidated.
QC_OPEN_STATUSES = ("in_process", "on_hold", "awaiting_release", "conditionally_released")
# Batches in QA's release queue (awaiting release, on hold, or conditionally released and
# awaiting results or their final release).
QUEUE_STATUSES = ("awaiting_release", "on_hold", "conditionally_released")
# A release (other than the final one) is refused once QA has decided.
DECIDED_STATUSES = ("released", "conditionally_released", "rejected")
# A rejection is refused once the batch is released for good or rejected.
CLOSED_STATUSES = ("released", "rejected")
CONDITIONALLY_RELEASED = "conditionally_released"
# The item status a release moves to released / conditionally released.
RELEASABLE_ITEM = "quarantine"

ReleaseAction = Literal["release", "final_release", "conditional", "reject"]


def qc_open(status: str) -> bool:
    """Results may be entered for a batch in this status."""
    return status in QC_OPEN_STATUSES


def awaits_final_release(status: str) -> bool:
    """A release of a batch in this status is its final release (SPEC §5)."""
    return status == CONDITIONALLY_RELEASED


def decided(status: str) -> bool:
    """QA has released, conditionally released or rejected the batch."""
    return status in DECIDED_STATUSES


def may_reject(status: str) -> bool:
    return status not in CLOSED_STATUSES
