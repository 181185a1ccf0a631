"""Random sequences of step, deviation, correction, custody and release actions on one
batch; the invariants hold after every action (issue 5).

Services are called directly, one transaction per action, as the API would. The qc
engineer may add QC-result rules here once qc.services exists: ``release`` below
stands in for the QA release service and applies only the batch-side rules
(``release_blockers``), which is all this domain guarantees.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from batches import services
from batches.models import Batch, Deviation, StepRecord
from gmp_mes.clock import clock, utcnow
from gmp_mes.errors import DomainError, InvalidTransition
from gmp_mes.models import AuditEvent, User
from tests.conftest import PASSWORD
from tests.test_batches_fixtures import (  # noqa: F401
    PLANT,
    Plant,
    bad_value,
    good_values,
    plant_fixture,
    sign,
)

RELEASED_STATES = {"released", "conditionally_released"}
FINAL = {"released", "rejected"}


def release(session: Any, number: str, *, conditional: bool) -> None:
    """Batch side of SPEC §5: refuse while anything blocks, else the status change."""
    blockers = services.release_blockers(session, number)
    if blockers:
        raise InvalidTransition("; ".join(message for _, message in blockers))
    services.set_batch_status(
        session,
        number,
        "conditionally_released" if conditional else "released",
        reason="QA release",
    )


try:
    import qc.services as qc_services
except ModuleNotFoundError:  # the qc domain is optional for this machine
    qc_services = None


class BatchMachine(RuleBasedStateMachine):
    plant: Plant
    analyst: Any = None
    reached: set[str] = set()  # statuses seen over the whole run (coverage check)

    @initialize(head_start=st.integers(0, 12))
    def start(self, head_start: int) -> None:
        """A new batch, with a random number of in-limit steps already recorded so that
        short random histories still reach release decisions."""
        clock.freeze(utcnow())
        self.number = self.plant.start()
        self.definition = self.plant.definition(self.number)
        self.final_seen: str | None = None
        self.refusals = 0
        for _ in range(head_start):
            self.record_next_step(True, 1)

    # --- helpers --------------------------------------------------------------------------

    def act(self, person: Any, action: Any) -> bool:
        """Run one unit of work; a domain refusal is fine (rolled back), a crash is not."""
        try:
            with self.plant.tx(person) as s:
                action(s)
        except DomainError:
            self.refusals += 1
            return False
        return True

    def status(self) -> str:
        return self.plant.batch(self.number).status

    # --- rules ----------------------------------------------------------------------------

    @rule(in_limits=st.booleans(), param_index=st.integers(0, 5))
    def record_next_step(self, in_limits: bool, param_index: int) -> None:
        with self.plant.tx() as s:
            allowed = [
                st_.step
                for st_ in services.step_states(s, services.get_batch(s, self.number))
                if st_.allowed
            ]
        if not allowed:
            return
        step = allowed[-1] if len(allowed) > 1 and param_index % 2 else allowed[0]
        values = good_values(step)
        limited = [
            p
            for p in step.parameters
            if p.min is not None or p.max is not None or p.expected is not None
        ]
        if not in_limits and limited:
            param = limited[param_index % len(limited)]
            values[param.code] = bad_value(param)
        verifier = (
            services.VerifierInput(self.plant.operator2.username, PASSWORD)
            if step.critical
            else None
        )
        before = self.status()
        ok = self.act(
            self.plant.operator,
            lambda s: services.record_step(
                s,
                self.number,
                step.code,
                values=values,
                user_id=self.plant.operator.user_id,
                signature=sign(),
                verifier=verifier,
            ),
        )
        assert ok, f"an allowed step {step.code} was refused in status {before}"
        clock.advance(timedelta(hours=12))

    @rule(count=st.integers(1, 8))
    def record_several_steps(self, count: int) -> None:
        """Runs of in-limit steps, so that random histories reach release."""
        for _ in range(count):
            self.record_next_step(True, 1)

    @rule(index=st.integers(0, 7))
    def record_any_step(self, index: int) -> None:
        step = self.definition.steps[index]
        with self.plant.tx() as s:
            allowed = {
                x.step.code
                for x in services.step_states(s, services.get_batch(s, self.number))
                if x.allowed
            }
        done = self.act(
            self.plant.operator,
            lambda s: services.record_step(
                s,
                self.number,
                step.code,
                values=good_values(step),
                user_id=self.plant.operator.user_id,
                signature=sign(),
                verifier=services.VerifierInput(self.plant.operator2.username, PASSWORD),
            ),
        )
        assert done == (step.code in allowed)

    @rule(severity=st.sampled_from(["minor", "major", "critical"]))
    def open_deviation(self, severity: str) -> None:
        self.act(
            self.plant.operator,
            lambda s: services.open_deviation(
                s,
                self.number,
                severity=severity,
                description=f"random {severity} event",
                user_id=self.plant.operator.user_id,
            ),
        )

    @rule(reclassify=st.sampled_from([None, "minor", "major"]))
    def assess_a_deviation(self, reclassify: str | None) -> None:
        ref = self._deviation("open")
        if ref:
            assert self.act(
                self.plant.qa,
                lambda s: services.assess_deviation(
                    s,
                    ref,
                    assessment="assessed",
                    severity=reclassify,
                    user_id=self.plant.qa.user_id,
                    signature=sign(meaning="reviewed"),
                ),
            )

    @rule()
    def close_a_deviation(self) -> None:
        ref = self._deviation("assessed")
        if ref:
            assert self.act(
                self.plant.qa,
                lambda s: services.close_deviation(
                    s,
                    ref,
                    closure="closed",
                    user_id=self.plant.qa.user_id,
                    signature=sign(meaning="approved"),
                ),
            )

    @rule()
    def qa_settles_every_deviation(self) -> None:
        for status in ("open", "assessed"):
            while ref := self._deviation(status):
                if status == "open":
                    self.assess_a_deviation(None)
                else:
                    self.close_a_deviation()
                if ref == self._deviation(status):
                    break
        if self._deviation("assessed"):
            self.close_a_deviation()

    def _deviation(self, status: str) -> str | None:
        with self.plant.tx() as s:
            return s.scalar(
                select(Deviation.number)
                .where(Deviation.batch_number == self.number, Deviation.status == status)
                .order_by(Deviation.id)
                .limit(1)
            )

    @rule(in_limits=st.booleans())
    def correct_last_record(self, in_limits: bool) -> None:
        with self.plant.tx() as s:
            records = services.current_records(s, services.get_batch(s, self.number))
        if not records:
            return
        last = records[-1]
        step = self.definition.step(last.step_code)
        values = good_values(step) | (
            {"bags": last.values["bags"]} if "bags" in last.values else {}
        )
        numeric = [p for p in step.parameters if p.min is not None or p.max is not None]
        if not in_limits and numeric:
            values[numeric[0].code] = bad_value(numeric[0])
        self.act(
            self.plant.operator,
            lambda s: services.correct_step(
                s,
                self.number,
                step.code,
                values=values,
                reason="random correction",
                occurrence=last.occurrence,
                user_id=self.plant.operator.user_id,
                signature=sign(),
                verifier=services.VerifierInput(self.plant.operator2.username, PASSWORD),
            ),
        )

    @rule(action=st.sampled_from(["move", "handover"]))
    def custody_of_a_bag(self, action: str) -> None:
        from identity import services as identity

        with self.plant.tx() as s:
            bags = services.final_product_item_ids(s, self.number)
        if bags:

            def move(s: Any) -> None:
                user = s.get(User, self.plant.operator.user_id)
                identity.record_custody(
                    s, bags[0], action=action, site=PLANT, user=user, location="LN2 tank 3"
                )

            self.act(self.plant.operator, move)

    @rule(conditional=st.booleans())
    def release(self, conditional: bool) -> None:
        before = self.status()
        ok = self.act(self.plant.qa, lambda s: release(s, self.number, conditional=conditional))
        if ok:
            assert before in {"awaiting_release", "conditionally_released"}

    @rule(passing=st.integers(0, 9), test_index=st.integers(0, 20))
    def qc_result(self, passing: int, test_index: int) -> None:
        """A QC result (the qc domain, when installed); mostly passing."""
        if qc_services is None or self.analyst is None:
            return
        specs = self.definition.qc
        spec = specs[test_index % len(specs)]
        good = passing > 0
        if spec.accept is not None:
            kw: dict[str, Any] = {"outcome": spec.accept if good else "positive"}
        else:
            lo = spec.min if spec.min is not None else (spec.max or 1) / 2
            hi = spec.max if spec.max is not None else spec.min * 2
            kw = {"value": (lo + hi) / 2 if good else hi * 10 + 1}
        self.act(
            self.analyst,
            lambda s: qc_services.record_result(
                s, self.number, test=spec.test, user_id=self.analyst.user_id, signature=sign(), **kw
            ),
        )

    @rule(conditional=st.booleans())
    def qa_release(self, conditional: bool) -> None:
        """The real release service (qc domain), with every rule of SPEC §5."""
        if qc_services is None:
            return
        before = self.status()
        ok = self.act(
            self.plant.qa,
            lambda s: qc_services.release_batch(
                s,
                self.number,
                user_id=self.plant.qa.user_id,
                signature=sign(meaning="released"),
                conditional=conditional,
                justification="sterility pending, patient needs the product"
                if conditional
                else None,
            ),
        )
        if ok:
            assert before in {"awaiting_release", "conditionally_released"}

    @rule()
    def release_bypassing_blockers(self) -> None:
        """set_batch_status itself refuses a release before all steps are recorded."""
        before = self.status()
        ok = self.act(
            self.plant.qa,
            lambda s: services.set_batch_status(s, self.number, "released", reason="forced"),
        )
        if ok:
            assert before in {"awaiting_release", "conditionally_released", "released"}

    @rule(dice=st.integers(0, 5))
    def reject(self, dice: int) -> None:
        if dice:  # rarely: a rejected batch ends the interesting part of the history
            return
        self.act(
            self.plant.qa,
            lambda s: services.set_batch_status(
                s, self.number, "rejected", reason="random rejection"
            ),
        )

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def invariants(self) -> None:
        with self.plant.tx() as s:
            batch = s.scalar(select(Batch).where(Batch.batch_number == self.number))
            records = services.current_records(s, batch)
            complete = services.steps_complete(self.definition, records)
            deviations = services.deviations_of(s, batch)
            events = list(
                s.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.entity_type == "batch", AuditEvent.entity_id == self.number)
                    .order_by(AuditEvent.seq)
                )
            )
            statuses = [json.loads(e.record)["new"].get("status") for e in events]
            statuses = [x for x in statuses if x]
            BatchMachine.reached.add(batch.status)
            # no release without all steps
            if batch.status in RELEASED_STATES:
                assert complete
            # never two releases
            assert statuses.count("released") <= 1
            assert statuses.count("conditionally_released") <= 1
            # final states never change
            if self.final_seen is not None:
                assert batch.status == self.final_seen
            if batch.status in FINAL:
                self.final_seen = batch.status
            # on hold exactly while an unassessed major/critical deviation is open
            if batch.status not in RELEASED_STATES | FINAL:
                held = any(d.holds_batch for d in deviations)
                assert (batch.status == "on_hold") == held
                if not held:
                    assert (batch.status == "awaiting_release") == complete
            # every change has an audit event: the batch's status trail ends in its status
            assert statuses[-1] == batch.status
            keys = set(
                s.scalars(
                    select(AuditEvent.entity_id).where(AuditEvent.entity_type == "step_record")
                )
            )
            for record in s.scalars(select(StepRecord).where(StepRecord.batch_id == batch.id)):
                assert record.key in keys
            deviation_events = {
                (e.entity_id, json.loads(e.record)["new"].get("status"))
                for e in s.scalars(select(AuditEvent).where(AuditEvent.entity_type == "deviation"))
            }
            for deviation in deviations:
                assert (deviation.number, deviation.status) in deviation_events


@pytest.mark.requirement("SPEC §5")
@pytest.mark.slow
def test_random_batch_histories_keep_the_invariants(plant: Plant, make_user: Any) -> None:
    BatchMachine.plant = plant
    BatchMachine.analyst = make_user("quentin", "qc")
    BatchMachine.reached = set()
    run_state_machine_as_test(
        BatchMachine,
        settings=settings(
            max_examples=15,
            stateful_step_count=40,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        ),
    )
    # the histories must have reached release decisions, or the test proves little
    assert {"on_hold", "awaiting_release"} <= BatchMachine.reached, BatchMachine.reached
    assert BatchMachine.reached & RELEASED_STATES, BatchMachine.reached
