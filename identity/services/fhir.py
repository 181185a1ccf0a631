"""The item as an HL7 FHIR R5 BiologicallyDerivedProduct."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from gmp_mes import audit
from identity.models import Item
from identity.services.items import genealogy, parents_of
from identity.services.lookup import get_item
from identity.services.patients import collection_of_item
from identity.services.rules import (
    AVAILABLE_STATUSES,
    COI_SYSTEM,
    DIN_SYSTEM,
    FHIR_PRODUCT_CATEGORY,
    FHIR_PRODUCT_STATUS,
    ITEM_SYSTEM,
    is_expired,
)


def fhir_status(item: Item, now: datetime | None = None) -> str:
    usable = item.status in AVAILABLE_STATUSES and not is_expired(item, now)
    return "available" if usable else "unavailable"


def fhir_product(session: Session, item_id: str) -> dict[str, Any]:
    """The item as an HL7 FHIR R5 BiologicallyDerivedProduct (JSON)."""
    item = get_item(session, item_id)
    tree = genealogy(session, item.item_id)
    source = collection_of_item(session, item.item_id)
    if source is None:
        for ancestor in tree["ancestors"]:
            source = collection_of_item(session, ancestor)
            if source is not None:
                break
    resource: dict[str, Any] = {
        "resourceType": "BiologicallyDerivedProduct",
        "id": item.item_id.replace("ITM-", "itm-").lower(),
        "identifier": [{"system": ITEM_SYSTEM, "value": item.item_id}],
        "productCategory": {"system": FHIR_PRODUCT_CATEGORY, "code": "cells",
                            "display": "Cells"},
        "productStatus": {"system": FHIR_PRODUCT_STATUS, "code": fhir_status(item),
                          "display": item.status},
        "biologicalSourceEvent": {"system": COI_SYSTEM, "value": item.coi_id},
        "parent": [{"reference": f"BiologicallyDerivedProduct/{p.replace('ITM-', 'itm-').lower()}",
                    "identifier": {"system": ITEM_SYSTEM, "value": p}}
                   for p in parents_of(session, item.item_id)],
        "processingFacility": [{"identifier": {"system": "urn:gmp-mes:site",
                                               "value": item.site_code},
                                "display": item.site_code}],
    }
    if item.description:
        resource["productCode"] = {"text": item.description}
    if item.batch_number:
        resource["division"] = item.batch_number
    if item.expires_at is not None:
        resource["expirationDate"] = audit.format_time(item.expires_at)[:19] + "Z"
    if source is not None:
        resource["collection"] = {
            "source": {"identifier": {"system": COI_SYSTEM, "value": source.coi_id},
                       "display": f"Patient {source.coi_id}"},
            "collectedDateTime": audit.format_time(source.collected_at)[:19] + "Z",
        }
        if source.din:
            resource["identifier"].append({"system": DIN_SYSTEM, "value": source.din})
    if not resource["parent"]:
        del resource["parent"]
    return resource
