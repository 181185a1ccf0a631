"""Shared fixtures of the training tests (imported by the other test_training_* files); it
holds no tests itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from gmp_mes.clock import clock
from gmp_mes.db import Database
from gmp_mes.registry import StepCheck, StepContext, StepNeeds, StepResources
from gmp_mes.signatures import SignatureInput
from tests.conftest import PASSWORD, Person
from tests.helpers import trail_time

CODE = "aseptic_processing"


@dataclass
class School:
    """A plant with QA, an admin and two operators, and helpers over the services."""

    app: Flask
    db: Database
    qa: Person
    admin: Person
    operator: Person
    operator2: Person

    @contextmanager
    def tx(self, person: Person | None = None) -> Iterator[Session]:
        person = person or self.qa
        with self.app.app_context(), self.db.transaction(actor=person.actor) as s:
            yield s

    def grant(self, person: Person, code: str = CODE, *, days: float = 365,
              until: datetime | None = None, by: Person | None = None) -> int:
        from training import services

        by = by or self.qa
        with self.tx(by) as s:
            return services.grant_qualification(
                s, person.username, code=code,
                valid_until=until or clock.now() + timedelta(days=days), user_id=by.user_id,
                signature=SignatureInput(PASSWORD, "approved")).id

    def revoke(self, person: Person, code: str = CODE, reason: str = "failed requalification",
               by: Person | None = None) -> list[int]:
        from training import services

        by = by or self.qa
        with self.tx(by) as s:
            return [r.id for r in services.revoke_qualification(
                s, person.username, code, reason=reason, user_id=by.user_id)]

    def check(self, *, code: str | None = CODE, verifier: str | None = None,
              at: datetime | None = None, performer: Person | None = None,
              recording: bool = False) -> StepCheck:
        from training import services

        performer = performer or self.operator
        ctx = StepContext(
            batch_number="B-TEST", coi_id="A999926000001Q", process_code="CART-AUTO",
            process_version=4, step_code="fill", needs=StepNeeds(qualification=code),
            given=StepResources(), at=at or clock.now(), performer_id=performer.user_id,
            verifier_username=verifier, site_code="CLEAN1", recording=recording)
        with self.tx(performer) as s:
            return services.check_step_qualification(s, ctx)


def codes(check: Any) -> list[str]:
    return [reason["code"] for reason in check.reasons]


@pytest.fixture(name="school")
def school_fixture(app: Flask, db: Database, make_user: Any) -> School:
    school = School(app, db, qa=make_user("quinn", "qa"), admin=make_user("adam", "admin"),
                    operator=make_user("olga", "operator"),
                    operator2=make_user("oscar", "operator"))
    # Frozen after the setup's audit events, never before them (DEVELOPING "Trusting the trail").
    clock.freeze(trail_time(db) + timedelta(seconds=1))
    return school
