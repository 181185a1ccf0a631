"""Shared fixtures of the identity tests (imported by the other test_identity_* files).

Named test_identity_* because the identity area owns only those test files; it
holds no tests itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
from flask import Flask

from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.db import Database

TREATMENT = "HOSP1"
OTHER_TREATMENT = "HOSP2"
APHERESIS = "APH1"
PLANT = "CLEAN1"


@dataclass
class World:
    """Sites and one user per role, plus helpers that call the services directly."""

    app: Flask
    db: Database
    clinician: Any
    operator: Any
    qa: Any
    counter: int = 0

    def tx(self, person: Any = None) -> Any:
        person = person or self.clinician
        return self.db.transaction(actor=Actor(person.username, person.user_id,
                                               person.username.title()))

    def enrol(self, mrn: str | None = None, site: str = TREATMENT, **kw: Any) -> dict[str, Any]:
        from identity import services

        self.counter += 1
        with self.app.app_context(), self.tx() as s:
            patient = services.enrol_patient(
                s, given_name=kw.get("given_name", "Ada"),
                family_name=kw.get("family_name", f"Lovelace{self.counter}"),
                date_of_birth=kw.get("date_of_birth", date(1970, 5, 17)),
                mrn=mrn or f"MRN{self.counter:05d}", treatment_site=site,
            )
            return {"coi_id": patient.coi_id, "wristband_item_id": patient.wristband_item_id}

    def collect(self, coi_id: str, **kw: Any) -> str:
        from identity import services

        with self.app.app_context(), self.tx(self.operator) as s:
            collection = services.record_collection(
                s, coi_id=coi_id, collected_at=kw.get("collected_at", utcnow()
                                                       - timedelta(hours=1)),
                site=kw.get("site", APHERESIS), volume_ml=kw.get("volume_ml", 250.0),
                din=kw.get("din"),
            )
            return collection.item_id

    def item(self, coi_id: str, *, kind: str = "final_product", status: str = "released",
             parents: tuple[str, ...] = (), site: str = PLANT, **kw: Any) -> str:
        from identity import services

        with self.app.app_context(), self.tx(self.operator) as s:
            return services.create_item(
                s, kind=kind, coi_id=coi_id, site_code=site, status=status,
                parent_ids=parents, **kw,
            ).item_id

    def get(self, item_id: str) -> Any:
        from identity import services

        with self.tx() as s:
            item = services.get_item(s, item_id)
            s.expunge(item)
            return item

    def set_status(self, item_id: str, *path: str) -> None:
        from identity import services

        for status in path:
            with self.app.app_context(), self.tx(self.qa) as s:
                services.transition_item(s, item_id, status)

    def payload(self, item_id: str) -> str:
        from labels import services as labels

        with self.app.app_context(), self.db.transaction(actor=Actor.system("test")) as s:
            return labels.payload_for_item(s, item_id)


@pytest.fixture(name="world")
def world_fixture(app: Flask, db: Database, make_site: Callable[..., str],
          make_user: Callable[..., Any]) -> World:
    make_site(TREATMENT, "treatment")
    make_site(OTHER_TREATMENT, "treatment")
    make_site(APHERESIS, "collection")
    make_site(PLANT, "manufacturing")
    return World(
        app=app, db=db,
        clinician=make_user("doc", "clinician", site=TREATMENT),
        operator=make_user("op", "operator", site=PLANT),
        qa=make_user("qa1", "qa", site=PLANT),
    )
