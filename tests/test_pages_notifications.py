"""Notifications (issue 15): the treating clinicians are told when a batch is released,
conditionally above all (the product may reach the patient before every result)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.test_batches_fixtures import HOSPITAL, plant_fixture  # noqa: F401
from tests.test_qc_fixtures import Lab, lab_fixture  # noqa: F401


def _alerts(lab: Lab, kind: str) -> list[dict]:
    with lab.plant.db.engine.connect() as c:
        rows = c.execute(text("SELECT * FROM alert WHERE kind = :k"), {"k": kind})
        return [dict(r._mapping) for r in rows]


@pytest.mark.requirement("EU GMP Part IV 11.5")
def test_conditional_release_tells_the_treating_clinicians(lab: Lab) -> None:
    number = lab.ready(skip=("sterility",))
    assert lab.release(number, conditional=True,
                       justification="patient relapsing; sterility pending") \
        == "conditional_release"
    (alert,) = _alerts(lab, "conditional_release_given")
    assert alert["roles"] == "clinician" and alert["site_code"] == HOSPITAL
    assert alert["severity"] == "warning" and "sterility" in alert["message"]
    assert "relapsing" in alert["message"]


def test_release_tells_the_treating_clinicians(lab: Lab) -> None:
    number = lab.ready()
    lab.release(number)
    (alert,) = _alerts(lab, "release_given")
    assert alert["roles"] == "clinician" and alert["site_code"] == HOSPITAL
    assert number in alert["message"]


@pytest.mark.requirement("EU GMP Annex 11 §13")
def test_an_expiry_alert_resolves_when_the_item_is_consumed(app, db, make_site) -> None:
    from datetime import date, timedelta

    from gmp_mes.alerts import AlertSpec, raise_alert
    from gmp_mes.audit import Actor
    from gmp_mes.clock import utcnow
    from identity import services as identity

    make_site("HOSP1", "treatment")
    make_site("CLEAN1", "manufacturing")
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        coi = identity.enrol_patient(s, given_name="A", family_name="B",
                                     date_of_birth=date(1970, 1, 1), mrn="M1",
                                     treatment_site="HOSP1").coi_id
        bag = identity.create_item(s, kind="starting_material", coi_id=coi,
                                   site_code="CLEAN1", status="received",
                                   expires_at=utcnow() + timedelta(hours=2)).item_id
        for kind in ("expiry_warning", "hold_time_exceeded"):
            raise_alert(s, AlertSpec(cause=f"{kind}:{bag}", kind=kind, severity="warning",
                                     subject_type="item", subject_id=bag, message=kind,
                                     roles=("operator",), site_code="CLEAN1"))
        raise_alert(s, AlertSpec(cause=f"other:{bag}", kind="label_forged", severity="major",
                                 subject_type="item", subject_id=bag, message="x",
                                 roles=("qa",)))
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        identity.start_processing(s, bag, "CART-26-0001")
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        identity.consume_starting_material(s, bag, "CART-26-0001", "receipt")
    with db.engine.connect() as c:
        rows = {r.kind: (r.status, r.acknowledge_note) for r in c.execute(
            text("SELECT kind, status, acknowledge_note FROM alert"))}
    assert rows["expiry_warning"][0] == rows["hold_time_exceeded"][0] == "acknowledged"
    assert "consumed" in rows["expiry_warning"][1]
    assert rows["label_forged"][0] == "open"  # another cause stays open
    with db.engine.connect() as c:
        events = c.execute(text("SELECT reason FROM audit_event WHERE entity_type = 'alert'"
                                " AND action = 'update'")).scalars().all()
    assert any("resolved: item" in (e or "") for e in events)
