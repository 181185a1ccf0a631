"""Random histories of QC results, corrections, invalidations, releases, rejections and
infusions keep the release invariants of SPEC §5 (Hypothesis stateful testing)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from gmp_mes.errors import DomainError
from tests.test_qc_fixtures import (  # noqa: F401 - fixtures
    Lab,
    failing,
    lab_fixture,
    passing,
    plant_fixture,
    signed,
)

INFUSIBLE = {"released", "conditionally_released", "shipped", "received", "thawed"}


class ReleaseMachine(RuleBasedStateMachine):
    lab: Lab
    reached: set[str] = set()

    def __init__(self) -> None:
        super().__init__()
        # Start near the decision: every test passed but sterility (release_before_result).
        self.number = self.lab.ready(bags=2, skip=("sterility",))
        self.specs = self.lab.specs(self.number)

    def act(self, person: Any, action: Any) -> bool:
        try:
            with self.lab.tx(person) as s:
                action(s)
        except DomainError:
            return False
        return True

    def current(self, test: str) -> int | None:
        from qc.services._common import _states

        with self.lab.tx() as s:
            state = _states(s, self.number).get(test)
            head = state.current if state else None
            return head.id if head else None

    @rule(index=st.integers(0, 7), good=st.integers(0, 3))
    def result(self, index: int, good: int) -> None:
        from qc import services

        spec = self.specs[index % len(self.specs)]
        fields = passing(spec) if good else failing(spec)
        head = self.current(spec.test)
        self.act(
            self.lab.analyst,
            lambda s: services.record_result(
                s,
                self.number,
                test=spec.test,
                user_id=self.lab.analyst.user_id,
                signature=signed(),
                corrects=head,
                reason="re-read" if head else None,
                **fields,
            ),
        )

    @rule(index=st.integers(0, 7))
    def invalidate(self, index: int) -> None:
        from qc import services

        head = self.current(self.specs[index % len(self.specs)].test)
        if head is not None:
            self.act(
                self.lab.analyst2,
                lambda s: services.invalidate_result(
                    s,
                    head,
                    user_id=self.lab.analyst2.user_id,
                    signature=signed(),
                    reason="assay control failed",
                ),
            )

    @rule(conditional=st.booleans(), second=st.booleans())
    def release(self, conditional: bool, second: bool) -> None:
        from qc import services

        person = self.lab.qa2 if second else self.lab.qa
        self.act(
            person,
            lambda s: services.release_batch(
                s,
                self.number,
                user_id=person.user_id,
                signature=signed("released"),
                conditional=conditional,
                justification="clinical need" if conditional else None,
            ),
        )

    @rule(dice=st.integers(0, 6))
    def reject(self, dice: int) -> None:
        from qc import services

        if dice == 0:
            self.act(
                self.lab.qa,
                lambda s: services.reject_batch(
                    s,
                    self.number,
                    user_id=self.lab.qa.user_id,
                    signature=signed("rejected"),
                    reason="random rejection",
                ),
            )

    @rule(which=st.integers(0, 1))
    def infuse(self, which: int) -> None:
        from identity import services as identity

        item_id = sorted(self.lab.items(self.number))[which]
        self.act(
            self.lab.qa,
            lambda s: identity.transition_item(s, item_id, "administered", reason="infused"),
        )

    @invariant()
    def release_rules_hold(self) -> None:
        from gmp_mes.alerts import list_alerts
        from qc import services

        with self.lab.tx() as s:
            overview = services.qc_overview(s, self.number)
            kinds = [d.kind for d in services.decisions_of(s, self.number)]
            alerts = [
                a
                for a in list_alerts(s, kind=services.POSITIVE_AFTER_RELEASE)
                if a.subject_id == self.number
            ]  # earlier examples' batches too
        status = self.lab.status(self.number)
        items = self.lab.items(self.number)
        ReleaseMachine.reached.add(status)
        failed_after = "failed_after_release" in kinds
        assert len(kinds) == len(set(kinds))  # every decision at most once
        assert not ({"release", "conditional_release"} <= set(kinds))
        if status == "released":
            assert all(row.passed for row in overview), overview
            assert not failed_after
            # A conditional release becomes final only by QA's signed final release.
            assert "conditional_release" not in kinds or "final_release" in kinds, kinds
        if "final_release" in kinds:
            assert status == "released" and "conditional_release" in kinds, (status, kinds)
        if status == "conditionally_released" and not failed_after:
            assert not any(row.failed for row in overview)
        if status not in ("released", "conditionally_released"):
            assert not (set(items.values()) & INFUSIBLE), (status, items)
        if failed_after:
            assert not (set(items.values()) & INFUSIBLE), items
            assert len(alerts) == 1
        else:
            assert alerts == []
        if status == "rejected":
            assert set(items.values()) <= {"rejected", "administered"}


@pytest.mark.requirement("SPEC §5")
@pytest.mark.slow
def test_random_release_histories_keep_the_rules(lab: Lab) -> None:
    ReleaseMachine.lab = lab
    ReleaseMachine.reached = set()
    run_state_machine_as_test(
        ReleaseMachine,
        settings=settings(
            max_examples=8,
            stateful_step_count=25,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        ),
    )
    assert ReleaseMachine.reached & {"released", "conditionally_released"}, ReleaseMachine.reached
