"""Chain of identity and chain of custody: the rules (SPEC §2, §4, §6).

Other domains call only the names re-exported here (``identity.services.<name>``,
DEVELOPING.md); the modules are the rooms of the domain's rules:

- ``rules``: statuses, the state machine's table, custody actions, the expiry rule;
- ``lookup``: an item or a patient by its key;
- ``items``: containers and the item state machine (:func:`transition_item`, the only
  place a status changes);
- ``patients``: enrolment, collections, what a label shows;
- ``custody``: :func:`record_custody`, the custody rules;
- ``scans`` and ``bedside``: label checks, the bedside check, administration;
- ``views``: read models for the API and pages; ``fhir``: the FHIR resource;
- ``recall``: the final-product bags as a query another domain joins (where-used).

Services take a session, flush and never commit; the request, command or job commits.
"""

from __future__ import annotations

from identity.models import ItemKind, ItemStatus
from identity.services.bedside import (
    BedsideRefused,
    BedsideResult,
    administer,
    administration_of,
    recorded_bedside,
    verifications_of,
    verify_bedside,
)
from identity.services.custody import (
    record_custody,
)
from identity.services.fhir import (
    fhir_product,
    fhir_status,
)
from identity.services.items import (
    can_transition,
    children_of,
    consume_starting_material,
    count_items,
    create_item,
    custody_trail,
    genealogy,
    items_of_batch,
    items_of_coi,
    items_to_handle,
    labels_of,
    parents_of,
    reject_starting_material,
    start_processing,
    transition_item,
)
from identity.services.lookup import (
    get_item,
    get_patient,
    printable,
)
from identity.services.patients import (
    ENROL_LOCK_CLASS,
    collection_of_item,
    collections_of,
    enrol_patient,
    first_collected,
    label_data,
    record_collection,
)
from identity.services.recall import final_products
from identity.services.rules import (
    AVAILABLE_STATUSES,
    CAUSE_GONE_STATUSES,
    CODE_KINDS,
    COI_SYSTEM,
    COLLECTION_CLOCK_SKEW,
    CUSTODY_ACTIONS,
    CUSTODY_ROLES,
    DIN_SYSTEM,
    FHIR_PRODUCT_CATEGORY,
    FHIR_PRODUCT_STATUS,
    FHIR_STATUS_CODES,
    FINAL_STATUSES,
    INFUSIBLE,
    ITEM_ID_ALPHABET,
    ITEM_SYSTEM,
    KIND_CODES,
    KIND_STATUSES,
    MAX_COLLECTION_AGE,
    MAX_GENEALOGY,
    STORAGE,
    TO_HANDLE,
    TRANSITIONS,
    ItemFacts,
    custody_actions_for,
    effective_deadline,
    hold_time_over,
    is_expired,
    post_thaw_deadline,
)
from identity.services.scans import (
    ScanResult,
    batch_starting_material,
    not_an_item,
    resolve_item_ref,
    scan,
    scanned_subject,
)
from identity.services.views import (
    IDENTITY_FIELDS,
    IDENTITY_ROLES,
    ItemView,
    PatientRow,
    PatientView,
    custody_page,
    find_target,
    initials,
    item_view,
    may_see_identity,
    patient_view,
    search_patients,
)

__all__ = [
    "AVAILABLE_STATUSES",
    "CAUSE_GONE_STATUSES",
    "CODE_KINDS",
    "COI_SYSTEM",
    "COLLECTION_CLOCK_SKEW",
    "CUSTODY_ACTIONS",
    "CUSTODY_ROLES",
    "DIN_SYSTEM",
    "ENROL_LOCK_CLASS",
    "FHIR_PRODUCT_CATEGORY",
    "FHIR_PRODUCT_STATUS",
    "FHIR_STATUS_CODES",
    "FINAL_STATUSES",
    "IDENTITY_FIELDS",
    "IDENTITY_ROLES",
    "INFUSIBLE",
    "ITEM_ID_ALPHABET",
    "ITEM_SYSTEM",
    "KIND_CODES",
    "KIND_STATUSES",
    "MAX_COLLECTION_AGE",
    "MAX_GENEALOGY",
    "STORAGE",
    "TO_HANDLE",
    "TRANSITIONS",
    "BedsideRefused",
    "BedsideResult",
    "ItemFacts",
    "ItemKind",
    "ItemStatus",
    "ItemView",
    "PatientRow",
    "PatientView",
    "ScanResult",
    "administer",
    "administration_of",
    "batch_starting_material",
    "can_transition",
    "children_of",
    "collection_of_item",
    "collections_of",
    "consume_starting_material",
    "count_items",
    "create_item",
    "custody_actions_for",
    "custody_page",
    "custody_trail",
    "effective_deadline",
    "enrol_patient",
    "fhir_product",
    "fhir_status",
    "final_products",
    "find_target",
    "first_collected",
    "genealogy",
    "get_item",
    "get_patient",
    "hold_time_over",
    "initials",
    "is_expired",
    "item_view",
    "items_of_batch",
    "items_of_coi",
    "items_to_handle",
    "label_data",
    "labels_of",
    "may_see_identity",
    "not_an_item",
    "parents_of",
    "patient_view",
    "post_thaw_deadline",
    "printable",
    "record_collection",
    "record_custody",
    "recorded_bedside",
    "reject_starting_material",
    "resolve_item_ref",
    "scan",
    "scanned_subject",
    "search_patients",
    "start_processing",
    "transition_item",
    "verifications_of",
    "verify_bedside",
]
