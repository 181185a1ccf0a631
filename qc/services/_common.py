"""Private helpers the qc service modules share (not re-exported): constants, user and
spec lookups, a batch's result states, the decisions, the treating site."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

import identity.services as identity
from batches import services as batches
from gmp_mes.errors import (
    NotFound,
    conflict,
    field_error,
)
from gmp_mes.models import Site, User
from qc.models import QcInvalidation, QcResult, QcReview, ReleaseDecision
from qc.services.states import qc_open

if TYPE_CHECKING:
    from batches.models import Batch


INVALID_OUTCOME = batches.INVALID_OUTCOME
POSITIVE_AFTER_RELEASE = "qc_positive_after_release"
FINAL_RELEASE_DUE = "final_release_due"
FINAL_RELEASE_GIVEN = "final_release_given"
CONDITIONAL_RELEASE_GIVEN = "conditional_release_given"
RELEASE_GIVEN = "release_given"


def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


def _spec(session: Session, batch_number: str, test: str) -> batches.QcSpec:
    specs = batches.qc_specs(session, batch_number)
    for spec in specs:
        if spec.test == test:
            return spec
    names = ", ".join(s.test for s in specs)
    raise field_error("test", f"unknown test {test!r}; the specification has: {names}")


def _number(value: float) -> str:
    return f"{value:g}"



def _results(session: Session, batch_number: str) -> list[QcResult]:
    return list(session.scalars(
        select(QcResult).where(QcResult.batch_number == batch_number).order_by(QcResult.id)
    ))


@dataclass
class _TestState:
    """One test's results: every version, the invalidated ones, the current one."""

    results: list[QcResult]
    superseded: set[int]
    invalid: dict[int, QcInvalidation]
    reviews: dict[int, QcReview]

    @property
    def current(self) -> QcResult | None:
        """The newest valid result version (None: no valid result, the test is open).

        A result recorded with the outcome ``invalid`` (the assay gave no valid answer)
        leaves the test open like an invalidated one: it is neither a pass nor an
        out-of-specification result, and a retest may follow."""
        for result in reversed(self.results):
            if result.id not in self.superseded and not self.is_invalid(result):
                return result
        return None

    def is_invalid(self, result: QcResult) -> bool:
        return result.id in self.invalid or result.outcome == INVALID_OUTCOME


def _states(session: Session, batch_number: str) -> dict[str, _TestState]:
    results = _results(session, batch_number)
    ids = [r.id for r in results]
    invalid = {i.result_id: i for i in session.scalars(
        select(QcInvalidation).where(QcInvalidation.result_id.in_(ids)))} if ids else {}
    reviews = {r.result_id: r for r in session.scalars(
        select(QcReview).where(QcReview.result_id.in_(ids)))} if ids else {}
    superseded = {r.supersedes_id for r in results if r.supersedes_id is not None}
    states: dict[str, _TestState] = {}
    for result in results:
        state = states.setdefault(result.test, _TestState([], superseded, invalid, reviews))
        state.results.append(result)
    return states


MAX_ID = 2**31 - 1  # ids are 32-bit integers; a larger number cannot name a result


def _head(session: Session, result_id: int) -> QcResult:
    if not 0 < result_id <= MAX_ID:
        raise NotFound(f"no QC result {result_id}")
    result = session.get(QcResult, result_id)
    if result is None:
        raise NotFound(f"no QC result {result_id}")
    return result


def _lock_open_batch(session: Session, batch_number: str) -> Batch:
    batch = batches.get_batch(session, batch_number, for_update=True)
    if not qc_open(batch.status):
        raise conflict(
            "qc_closed",
            f"batch {batch_number} is {batch.status}: its QC record is closed",
        )
    return batch


def _decision(session: Session, batch_number: str, kind: str) -> ReleaseDecision | None:
    return session.scalar(select(ReleaseDecision).where(
        ReleaseDecision.batch_number == batch_number, ReleaseDecision.kind == kind))



def _treating_site(session: Session, coi_id: str) -> str | None:
    try:
        return identity.get_patient(session, coi_id).treatment_site
    except NotFound:
        return None



def _is_treatment(session: Session, site_code: str) -> bool:
    site = session.scalar(select(Site).where(Site.code == site_code))
    return site is not None and site.kind == "treatment"
