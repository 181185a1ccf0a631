"""Statuses, the state machine's table, custody actions and the expiry rule (SPEC §2,
§3, §6): the one place they are stated; the modules and templates ask here."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from gmp_mes.accounts import Person
from gmp_mes.clock import utcnow
from gmp_mes.durations import parse_duration
from identity.models import Item, ItemKind, ItemStatus

KIND_CODES: dict[str, str] = {
    ItemKind.STARTING_MATERIAL: "SM",
    ItemKind.INTERMEDIATE: "IM",
    ItemKind.FINAL_PRODUCT: "FP",
    ItemKind.QC_SAMPLE: "QS",
    ItemKind.RETENTION_SAMPLE: "RS",
    ItemKind.WRISTBAND: "WB",
}
CODE_KINDS: dict[str, str] = {code: str(kind) for kind, code in KIND_CODES.items()}

S = ItemStatus
FINAL_STATUSES = frozenset({S.REJECTED, S.ADMINISTERED, S.EXPIRED, S.DESTROYED, S.CONSUMED})
# Statuses in which a final-product bag may be infused (SPEC §6).
INFUSIBLE = frozenset({S.RELEASED, S.CONDITIONALLY_RELEASED, S.RECEIVED, S.THAWED})

# SPEC §2: quarantine -> released | rejected; released -> shipped -> received -> thawed
# -> administered; any non-final status -> expired or destroyed. conditionally_released
# is a released state still waiting for a result; blocked is a quality block (SPEC §5).
# Administration is allowed from every infusible status (SPEC §6).
_ALWAYS = {S.EXPIRED, S.DESTROYED, S.BLOCKED}
TRANSITIONS: dict[str, frozenset[str]] = {
    S.QUARANTINE: frozenset({S.RELEASED, S.CONDITIONALLY_RELEASED, S.REJECTED, S.AVAILABLE,
                             S.IN_PROCESS, *_ALWAYS}),
    S.CONDITIONALLY_RELEASED: frozenset({S.RELEASED, S.REJECTED, S.SHIPPED, S.ADMINISTERED,
                                         *_ALWAYS}),
    S.RELEASED: frozenset({S.SHIPPED, S.ADMINISTERED, *_ALWAYS}),
    S.SHIPPED: frozenset({S.RECEIVED, *_ALWAYS}),
    # Starting material received at the cleanroom starts a batch from here (in_process,
    # or consumed when the batch takes it whole).
    S.RECEIVED: frozenset({S.THAWED, S.SHIPPED, S.ADMINISTERED, S.IN_PROCESS, S.AVAILABLE,
                           S.CONSUMED, *_ALWAYS}),
    S.THAWED: frozenset({S.ADMINISTERED, *_ALWAYS}),
    S.AVAILABLE: frozenset({S.IN_PROCESS, S.SHIPPED, S.CONSUMED, S.QUARANTINE, *_ALWAYS}),
    # A batch rejected before the step that consumes its starting material rejects it too.
    S.IN_PROCESS: frozenset({S.AVAILABLE, S.CONSUMED, S.QUARANTINE, S.REJECTED, *_ALWAYS}),
    S.BLOCKED: frozenset({S.REJECTED, S.DESTROYED, S.EXPIRED}),
}
# The statuses each kind of container can be in (documented in the OpenAPI document).
KIND_STATUSES: dict[str, frozenset[str]] = {
    ItemKind.FINAL_PRODUCT: frozenset({S.QUARANTINE, S.RELEASED, S.CONDITIONALLY_RELEASED,
                                       S.REJECTED, S.SHIPPED, S.RECEIVED, S.THAWED,
                                       S.ADMINISTERED, S.EXPIRED, S.DESTROYED, S.BLOCKED}),
    ItemKind.STARTING_MATERIAL: frozenset({S.AVAILABLE, S.QUARANTINE, S.SHIPPED, S.RECEIVED,
                                           S.IN_PROCESS, S.CONSUMED, S.REJECTED, S.EXPIRED,
                                           S.DESTROYED, S.BLOCKED}),
    ItemKind.INTERMEDIATE: frozenset({S.IN_PROCESS, S.AVAILABLE, S.QUARANTINE, S.SHIPPED,
                                      S.RECEIVED, S.CONSUMED, S.REJECTED, S.EXPIRED,
                                      S.DESTROYED, S.BLOCKED}),
    ItemKind.QC_SAMPLE: frozenset({S.AVAILABLE, S.IN_PROCESS, S.SHIPPED, S.RECEIVED,
                                   S.CONSUMED, S.EXPIRED, S.DESTROYED, S.BLOCKED}),
    ItemKind.RETENTION_SAMPLE: frozenset({S.AVAILABLE, S.SHIPPED, S.RECEIVED, S.CONSUMED,
                                          S.EXPIRED, S.DESTROYED, S.BLOCKED}),
    ItemKind.WRISTBAND: frozenset({S.AVAILABLE, S.DESTROYED}),
}
STORAGE: dict[str, str] = {
    ItemKind.FINAL_PRODUCT: "Store in vapour phase of liquid nitrogen <= -150 °C",
    ItemKind.STARTING_MATERIAL: "2-8 °C",
    ItemKind.INTERMEDIATE: "Per batch record",
    ItemKind.QC_SAMPLE: "2-8 °C",
    ItemKind.RETENTION_SAMPLE: "Store in vapour phase of liquid nitrogen <= -150 °C",
    ItemKind.WRISTBAND: "",
}

ITEM_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # base32: inside the QR alphanumeric set
# A collection time a few minutes ahead of the server clock is a device clock skew,
# not a future event; beyond that it is refused.
COLLECTION_CLOCK_SKEW = timedelta(minutes=2)
# Cryopreserved apheresis material may be used years after collection, never decades:
# an older date is a typing error (0001-01-01), refused (issue 13, Annex 11 §6).
MAX_COLLECTION_AGE = timedelta(days=10 * 366)
MAX_GENEALOGY = 500


class ItemFacts(Protocol):
    """What checks read of an item: an ``Item`` or a row of the item table (scans read
    the row with one Core query and change nothing on it)."""

    @property
    def item_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def coi_id(self) -> str: ...
    @property
    def batch_number(self) -> str | None: ...
    @property
    def location(self) -> str | None: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def post_thaw_window(self) -> str | None: ...
    @property
    def thawed_at(self) -> datetime | None: ...


def hold_time_over(item: ItemFacts) -> bool:
    """SPEC §3: a starting material's hold time runs from collection to batch start. Once
    its batch has started it (``in_process``), the hold time no longer applies."""
    return item.kind == ItemKind.STARTING_MATERIAL and item.status == S.IN_PROCESS


def is_expired(item: ItemFacts, now: datetime | None = None) -> bool:
    now = now or utcnow()
    if item.status == S.EXPIRED:
        return True
    if hold_time_over(item):
        return False
    return item.expires_at is not None and item.expires_at <= now


def post_thaw_deadline(item: ItemFacts) -> datetime | None:
    if item.thawed_at is None or not item.post_thaw_window:
        return None
    return item.thawed_at + parse_duration(item.post_thaw_window)


def effective_deadline(item: Item) -> datetime | None:
    """The first of the shelf-life expiry and, for a thawed bag, the post-thaw deadline."""
    deadlines = [d for d in (item.expires_at, post_thaw_deadline(item)) if d is not None]
    return min(deadlines, default=None)


# Statuses of containers that still need someone to act on them at a site.
TO_HANDLE = (S.QUARANTINE, S.AVAILABLE, S.RELEASED, S.CONDITIONALLY_RELEASED, S.SHIPPED,
             S.RECEIVED, S.THAWED, S.BLOCKED)


# Once an item is in one of these, its expiry and hold-time alerts have no cause left.
CAUSE_GONE_STATUSES = frozenset({S.CONSUMED, S.ADMINISTERED, S.DESTROYED})


CUSTODY_ACTIONS = ("handover", "move", "ship", "receive", "thaw")
# The roles that handle containers; an account holding only ``admin`` never records custody.
CUSTODY_ROLES = ("operator", "qc", "qa", "clinician")


def custody_actions_for(item: ItemFacts, user: Person | None) -> tuple[str, ...]:
    """The custody actions ``user`` may ask for ``item`` (the item page offers these):
    none for an item in a final status or for an account that handles no container;
    where and by whom each one is recorded is checked by ``record_custody``."""
    if item.status in FINAL_STATUSES or user is None or not user.has_role(*CUSTODY_ROLES):
        return ()
    return CUSTODY_ACTIONS


# HL7 FHIR R5 value sets (fhir.resources does not enforce them).
FHIR_PRODUCT_CATEGORY = "http://hl7.org/fhir/product-category"
FHIR_PRODUCT_STATUS = "http://hl7.org/fhir/biologicallyderived-product-status"
FHIR_STATUS_CODES = frozenset({"available", "unavailable"})
ITEM_SYSTEM = "urn:gmp-mes:item-id"
COI_SYSTEM = "urn:gmp-mes:isbt128-coi"
DIN_SYSTEM = "urn:gmp-mes:isbt128-din"
AVAILABLE_STATUSES = frozenset({S.RELEASED, S.CONDITIONALLY_RELEASED, S.RECEIVED, S.THAWED,
                                S.AVAILABLE})
