"""The follow-up as HL7 FHIR R5 resources a registry can take (SPEC §16): one Bundle of
type ``collection`` per patient with the infused BiologicallyDerivedProduct (identity's
resource) and, per current follow-up record, Observations of the response, the CRS and
ICANS grades (their elements as components) and the vital status. Every Observation
names the patient by the COI identifier (no name leaves the system) and the product as
its ``focus``."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from gmp_mes import audit
from identity import services as identity
from outcomes.models import FollowUpRecord
from outcomes.services.visits import visit_label, visits_of

OBSERVATION_SYSTEM = "urn:gmp-mes:follow-up"
RESPONSE_SYSTEM = "urn:gmp-mes:response"
ELEMENT_SYSTEM = "urn:gmp-mes:astct-2019-element"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
# FHIR R5 Observation.status: a corrected record is a later version ("corrected").
OBSERVATION_STATUSES = frozenset({"final", "corrected"})
RESPONSE_TEXT = {"CR": "Complete response", "PR": "Partial response",
                 "SD": "Stable disease", "PD": "Progressive disease", "NE": "Not evaluable"}


def _fhir_time(value: Any) -> str:
    return audit.format_time(value)[:19] + "Z"


def _product_ref(item_id: str) -> dict[str, Any]:
    return {"reference": f"BiologicallyDerivedProduct/{item_id.replace('ITM-', 'itm-').lower()}",
            "identifier": {"system": identity.ITEM_SYSTEM, "value": item_id}}


def _observation(record: FollowUpRecord, item_id: str, kind: str, display: str,
                 **value: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"fu-{record.id}-{kind.replace('_', '-')}",
        "identifier": [{"system": OBSERVATION_SYSTEM,
                        "value": f"{record.batch_number}:{record.visit}:{kind}:v{record.version}"}],
        "status": "corrected" if record.version > 1 else "final",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "exam",
                                  "display": "Exam"}]}],
        "code": {"coding": [{"system": OBSERVATION_SYSTEM, "code": kind, "display": display}],
                 "text": f"{display}, {visit_label(record.visit)}"},
        "subject": {"identifier": {"system": identity.COI_SYSTEM, "value": record.coi_id},
                    "display": f"Patient {record.coi_id}"},
        "focus": [_product_ref(item_id)],
        "effectiveDateTime": _fhir_time(record.assessed_at),
        "issued": _fhir_time(record.recorded_at),
        **value,
    }


def _components(elements: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, value in sorted(elements.items()):
        component: dict[str, Any] = {"code": {"coding": [{"system": ELEMENT_SYSTEM,
                                                           "code": name}]}}
        if isinstance(value, bool):
            component["valueBoolean"] = value
        elif isinstance(value, int):
            component["valueInteger"] = value
        else:
            component["valueCodeableConcept"] = {
                "coding": [{"system": ELEMENT_SYSTEM, "code": f"{name}:{value}"}],
                "text": str(value)}
        out.append(component)
    return out


def record_observations(record: FollowUpRecord, item_id: str) -> list[dict[str, Any]]:
    """The Observations of one follow-up record (response, grades, vital status)."""
    out = [_observation(record, item_id, "response", "Response to treatment",
                        valueCodeableConcept={
                            "coding": [{"system": RESPONSE_SYSTEM, "code": record.response,
                                        "display": RESPONSE_TEXT[record.response]}],
                            "text": RESPONSE_TEXT[record.response]})]
    crs, icans = record.crs_elements, record.icans_elements
    if crs is not None and record.crs_grade is not None:
        out.append(_observation(record, item_id, "crs_grade",
                                "Cytokine release syndrome grade (ASTCT 2019)",
                                valueInteger=record.crs_grade, component=_components(crs)))
    if icans is not None and record.icans_grade is not None:
        out.append(_observation(
            record, item_id, "icans_grade",
            "Immune effector cell-associated neurotoxicity syndrome grade (ASTCT 2019)",
            valueInteger=record.icans_grade, component=_components(icans)))
    vital = _observation(record, item_id, "vital_status", "Alive", valueBoolean=record.alive)
    if record.death_date is not None:
        vital["component"] = [{"code": {"coding": [{"system": OBSERVATION_SYSTEM,
                                                    "code": "death_date"}]},
                               "valueDateTime": record.death_date.isoformat()}]
    out.append(vital)
    return out


def fhir_follow_up(session: Session, coi_id: str) -> dict[str, Any]:
    """The patient's follow-up as a FHIR R5 Bundle (type ``collection``)."""
    views = visits_of(session, coi_id)
    entries: list[dict[str, Any]] = []
    for item_id in dict.fromkeys(v.visit.item_id for v in views):
        entries.append({"resource": identity.fhir_product(session, item_id)})
    for view in views:
        if view.record is not None:
            entries.extend({"resource": r}
                           for r in record_observations(view.record, view.visit.item_id))
    return {"resourceType": "Bundle", "type": "collection",
            "identifier": {"system": OBSERVATION_SYSTEM, "value": f"follow-up:{coi_id}"},
            "entry": entries}
