"""The follow-up as FHIR R5 (SPEC §16): a Bundle with the infused BiologicallyDerivedProduct
and Observations of response, CRS/ICANS grade and vital status, each linked to the COI
identifier and the product; validated with fhir.resources (status value sets checked
here, since fhir.resources 8 does not enforce them)."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from fhir.resources.bundle import Bundle
from fhir.resources.observation import Observation

from tests.test_outcomes_fixtures import (  # noqa: F401 - fixtures
    Ward,
    lab_fixture,
    plant_fixture,
    record_body,
    ward_fixture,
)


@pytest.mark.requirement("SPEC §16")
def test_follow_up_as_fhir_r5_validates(ward: Ward, login) -> None:
    from identity.services import COI_SYSTEM, ITEM_SYSTEM
    from outcomes.services import OBSERVATION_STATUSES

    api = login(ward.clinician)
    coi, _, bag = ward.infused(api)
    at = (ward.administered_at(bag) + timedelta(minutes=1)).astimezone(UTC).isoformat()
    first = api.post(f"/api/v1/patients/{coi}/follow-up", json=record_body(
        assessed_at=at, response="PR", crs={"fever": True, "hypotension": "no_vasopressor"},
        icans={"ice_score": 6, "consciousness": "awakens_to_voice"})).get_json()
    api.post(f"/api/v1/patients/{coi}/follow-up", json=record_body(
        assessed_at=at, response="CR", crs={"fever": True, "hypotension": "no_vasopressor"},
        icans={"ice_score": 6, "consciousness": "awakens_to_voice"}, corrects=first["id"],
        reason="restaging read again"))
    answer = api.get(f"/api/v1/patients/{coi}/follow-up/fhir")
    assert answer.status_code == 200 and answer.mimetype == "application/fhir+json"
    body = answer.get_json()
    bundle = Bundle.model_validate(body)
    assert bundle.type == "collection"
    resources = [e["resource"] for e in body["entry"]]
    (product,) = [r for r in resources if r["resourceType"] == "BiologicallyDerivedProduct"]
    assert product["identifier"][0] == {"system": ITEM_SYSTEM, "value": bag}
    observations = {r["code"]["coding"][0]["code"]: r for r in resources
                    if r["resourceType"] == "Observation"}
    assert set(observations) == {"response", "crs_grade", "icans_grade", "vital_status"}
    for resource in observations.values():
        Observation.model_validate(resource)
        assert resource["status"] in OBSERVATION_STATUSES
        assert resource["status"] == "corrected"  # the current record is version 2
        assert resource["subject"]["identifier"] == {"system": COI_SYSTEM, "value": coi}
        assert resource["focus"][0]["identifier"]["value"] == bag
        assert resource["focus"][0]["reference"].endswith(product["id"])
    assert observations["response"]["valueCodeableConcept"]["coding"][0]["code"] == "CR"
    assert observations["crs_grade"]["valueInteger"] == 2
    assert observations["icans_grade"]["valueInteger"] == 2
    assert {c["code"]["coding"][0]["code"]: c.get("valueBoolean")
            for c in observations["crs_grade"]["component"]}["fever"] is True
    assert observations["vital_status"]["valueBoolean"] is True
    assert "Grace" not in answer.get_data(as_text=True)  # no name leaves the system
