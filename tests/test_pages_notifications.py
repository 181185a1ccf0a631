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


@pytest.mark.requirement("EU GMP Annex 16 §3.3")
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
