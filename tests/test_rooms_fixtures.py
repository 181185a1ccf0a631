"""Shared fixtures of the rooms tests (imported by the other test_rooms_* files); it holds
no tests itself. ``Ward`` is the batches tests' ``Plant`` with an admin, a QC analyst,
rooms and helpers over the rooms services."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from gmp_mes.clock import clock
from gmp_mes.registry import StepCheck, StepContext, StepNeeds, StepResources
from gmp_mes.signatures import SignatureInput
from tests.conftest import PASSWORD, Person
from tests.helpers import trail_time
from tests.test_batches_fixtures import PLANT, Plant, plant_fixture  # noqa: F401


@dataclass
class Ward:
    plant: Plant
    admin: Person
    qc: Person

    def tx(self, person: Person | None = None) -> Any:
        return self.plant.tx(person)

    def plant_site_2(self) -> str:
        """A second manufacturing site."""
        from gmp_mes import accounts
        from gmp_mes.audit import Actor

        with self.plant.app.app_context(), self.plant.db.transaction(
                actor=Actor.system("test")) as s:
            if "CLEAN2" not in {site.code for site in accounts.list_sites(s)}:
                accounts.create_site(s, "CLEAN2", kind="manufacturing", name="Site CLEAN2",
                                     timezone="Europe/Paris")
        return "CLEAN2"

    def room(self, code: str, grade: str = "C", *, site: str = PLANT) -> str:
        from rooms import services

        with self.tx(self.admin) as s:
            return services.create_room(s, code=code, site_code=site, grade=grade,
                                        name=f"Room {code}", user_id=self.admin.user_id).code

    def context(self, batch: str, coi: str, *, room: str | None, grade: str | None = "C",
                step: str = "receipt", recording: bool = False,
                site: str | None = PLANT) -> StepContext:
        return StepContext(
            batch_number=batch, coi_id=coi, process_code="CART-AUTO", process_version=1,
            step_code=step, needs=StepNeeds(room_grade=grade),
            given=StepResources(room=room), at=clock.now(),
            performer_id=self.plant.operator.user_id, verifier_username=None,
            site_code=site, recording=recording)

    def check(self, batch: str, coi: str, *, room: str | None, grade: str | None = "C",
              step: str = "receipt", site: str | None = PLANT,
              apply_record: int | None = None) -> StepCheck:
        """The provider's answer; with ``apply_record`` the use is written (as batches does
        once the step record exists)."""
        from rooms import services

        ctx = self.context(batch, coi, room=room, grade=grade, step=step, site=site,
                           recording=apply_record is not None)
        with self.tx() as s:
            answer = services.check_step_room(s, ctx)
            if apply_record is not None and not answer.reasons and answer.apply is not None:
                answer.apply(s, apply_record)
            return answer

    def enter(self, batch: str, room: str, *, step: str = "receipt",
              advance: timedelta = timedelta(minutes=1)) -> StepCheck:
        """A real batch's step in a room (its COI), the use logged."""
        clock.advance(advance)
        coi = self.plant.batch(batch).coi_id
        self._record = getattr(self, "_record", 1000) + 1
        answer = self.check(batch, coi, room=room, grade=None, step=step,
                            apply_record=self._record)
        assert answer.reasons == [], answer.reasons
        return answer

    def clear(self, room: str, person: Person | None = None) -> int:
        from rooms import services

        person = person or self.plant.operator
        clock.advance(timedelta(minutes=1))
        with self.tx(person) as s:
            return services.perform_clearance(s, room, user_id=person.user_id,
                                              signature=SignatureInput(PASSWORD, "performed")).id

    def verify(self, room: str, clearance: int, person: Person | None = None) -> None:
        from rooms import services

        person = person or self.plant.operator2
        clock.advance(timedelta(minutes=1))
        with self.tx(person) as s:
            services.verify_clearance(s, room, clearance, user_id=person.user_id,
                                      signature=SignatureInput(PASSWORD, "verified"))

    def em(self, room: str, sample_type: str, value: int, *,
           sampled_at: datetime | None = None, person: Person | None = None) -> Any:
        from rooms import services

        person = person or self.qc
        clock.advance(timedelta(minutes=1))
        with self.tx(person) as s:
            outcome = services.record_em_result(
                s, room, sample_type=sample_type, value=value,
                sampled_at=sampled_at or clock.now(), user_id=person.user_id,
                signature=SignatureInput(PASSWORD, "performed"))
            return {"id": outcome.result.id, "passed": outcome.result.passed,
                    "alert_level": outcome.result.alert_level, "warning": outcome.warning,
                    "deviations": list(outcome.deviations), "released": outcome.released}

    def deviations(self, batch: str) -> list[Any]:
        from batches import services

        with self.tx() as s:
            return [(d.kind, d.severity, d.status, d.description)
                    for d in services.deviations_of(s, services.get_batch(s, batch))]


def codes(answer: StepCheck) -> list[str]:
    return [reason["code"] for reason in answer.reasons]


@pytest.fixture(name="ward")
def ward_fixture(plant: Plant, make_user: Any) -> Ward:
    ward = Ward(plant, admin=make_user("adam", "admin"), qc=make_user("quentin", "qc"))
    # Frozen after the setup's audit events, never before them (DEVELOPING "Trusting the trail").
    clock.freeze(trail_time(plant.db) + timedelta(seconds=1))
    return ward
