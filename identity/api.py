"""HTTP API of the identity domain (SPEC §7): parse, authorise, call services, dump."""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify
from flask_smorest import Blueprint

from gmp_mes.http import db_session, roles_except, roles_required
from gmp_mes.schemas import SignatureOutSchema
from identity import services
from identity.schemas import (
    AdministrationInSchema,
    AdministrationSchema,
    BedsideInSchema,
    BedsideSchema,
    CollectionInSchema,
    CollectionSchema,
    CustodyEventSchema,
    CustodyInSchema,
    ItemQuerySchema,
    ItemSchema,
    PatientInSchema,
    PatientSchema,
    ScanInSchema,
    ScanSchema,
    as_dict,
)

blp = Blueprint("identity_api", __name__, url_prefix="/api/v1",
                description="Patients, collections, items, custody, scans, bedside")


def _site_code() -> str | None:
    return g.user.site.code if g.user.site is not None else None


@blp.route("/patients", methods=["POST"])
@blp.arguments(PatientInSchema)
@blp.response(201, PatientSchema)
@roles_required("clinician", "admin")
def enrol_patient(body: dict[str, Any]) -> services.PatientView:
    """Enrol a patient: assigns the COI ID and creates the wristband item.

    409 `already_enrolled` (with `coi_id`) when the MRN is enrolled at that site."""
    session = db_session()
    patient = services.enrol_patient(session, **body)
    return services.patient_view(session, patient.coi_id, g.user)


@blp.route("/patients/<coi_id>", methods=["GET"])
@blp.response(200, PatientSchema)
@roles_required()
def get_patient(coi_id: str) -> services.PatientView:
    """A patient with items (the wristband included), collections and batches.
    `given_name`, `family_name`, `date_of_birth` and `mrn` only for users of the
    patient's treatment or collection site, QA and admins; others get `initials`."""
    return services.patient_view(db_session(), coi_id, g.user)


@blp.route("/collections", methods=["POST"])
@blp.arguments(CollectionInSchema)
@blp.response(201, CollectionSchema)
@roles_required("clinician", "operator")
def record_collection(body: dict[str, Any]) -> dict[str, Any]:
    """Record an apheresis collection; creates the starting-material item."""
    session = db_session()
    collection = services.record_collection(session, **body)
    return as_dict(collection, item=services.get_item(session, collection.item_id))


@blp.route("/items/<item_id>", methods=["GET"])
@blp.arguments(ItemQuerySchema, location="query")
@blp.response(200, ItemSchema)
@roles_required()
def get_item(query: dict[str, Any], item_id: str) -> services.ItemView:
    """An item with genealogy (both ways), labels and its custody trail in pages (the
    newest ``custody_limit`` events; ``custody_older`` is the cursor of older ones)."""
    return services.item_view(db_session(), item_id, custody_limit=query["custody_limit"],
                              custody_before=query["custody_before"])


@blp.route("/items/<item_id>/custody", methods=["POST"])
@blp.arguments(CustodyInSchema)
@blp.response(201, CustodyEventSchema)
@roles_except("admin")
def record_custody(body: dict[str, Any], item_id: str) -> Any:
    """Handover, move, ship (`site` = destination), receive, thaw."""
    return services.record_custody(db_session(), item_id, user=g.user, **body)


@blp.route("/scans", methods=["POST"])
@blp.arguments(ScanInSchema)
@blp.response(200, ScanSchema)
@roles_required()
def scan(body: dict[str, Any]) -> services.ScanResult:
    """Check a scanned label as the keyboard wedge typed it; every scan is recorded."""
    return services.scan(db_session(), body["payload"], user=g.user, site_code=_site_code(),
                         workstation=body["workstation"], batch_number=body["batch_number"])


@blp.route("/bedside/verify", methods=["POST"])
@blp.arguments(BedsideInSchema)
@blp.response(200, BedsideSchema)
@roles_required("clinician")
def verify_bedside(body: dict[str, Any]) -> dict[str, Any]:
    """Wristband against bag (SPEC §6): every reason at once; the verdict is recorded."""
    result = services.verify_bedside(db_session(), body["patient_payload"],
                                     body["product_payload"], user=g.user,
                                     site_code=_site_code())
    return {
        "match": result.match, "reasons": result.reasons, "warnings": result.warnings,
        "item_id": result.item.item_id if result.item else None,
        "coi_id": result.item.coi_id if result.item else None,
        "verification_id": result.verification.id if result.verification else None,
    }


@blp.route("/administrations", methods=["POST"])
@blp.arguments(AdministrationInSchema)
@blp.response(201, AdministrationSchema)
@roles_required("clinician")
def administer(body: dict[str, Any]) -> dict[str, Any]:
    """Administer after a matching check, signed (meaning `administered`); 409 with the
    reasons otherwise (`already_administered` for a bag already infused)."""
    session = db_session()
    administration = services.administer(
        session, body["patient_payload"], body["product_payload"], user=g.user,
        site_code=_site_code(), signature=body["signature"],
    )
    from gmp_mes.models import Signature

    signature = session.get(Signature, administration.signature_id)
    return as_dict(administration, signature=SignatureOutSchema().dump(signature),
                   warning_list=administration.warning_list)


@blp.route("/items/<item_id>/fhir", methods=["GET"])
@blp.response(200, {"type": "object", "description": "FHIR R5 BiologicallyDerivedProduct"})
@roles_required()
def item_fhir(item_id: str) -> Response:
    """The item as an HL7 FHIR R5 BiologicallyDerivedProduct."""
    response = jsonify(services.fhir_product(db_session(), item_id))
    response.content_type = "application/fhir+json"
    return response
