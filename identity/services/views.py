"""Read models for the API and pages: item and patient views, the patient list, the
header search."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import ColumnElement, exists, false, func, or_, select, true
from sqlalchemy.orm import Session

import labels.services as labels
from gmp_mes import paging, registry
from gmp_mes.accounts import Person
from gmp_mes.errors import conflict
from gmp_mes.registry import BatchBrief
from identity import coi
from identity.models import (
    Administration,
    Collection,
    CustodyEvent,
    Item,
    ItemKind,
    ItemStatus,
    Patient,
)
from identity.services._common import _bedside_warnings
from identity.services.bedside import administration_of
from identity.services.items import (
    children_of,
    custody_trail,
    genealogy,
    items_of_coi,
    labels_of,
    parents_of,
)
from identity.services.lookup import get_item, get_patient
from identity.services.patients import collections_of
from identity.services.rules import post_thaw_deadline
from identity.services.scans import resolve_item_ref, scanned_subject
from labels.services import LabelRecord

S = ItemStatus


def custody_page(session: Session, item_id: str, *, limit: int,
                 before: int | None = None) -> tuple[list[CustodyEvent], int | None]:
    """The ``limit`` custody events of an item just before event ``before`` (the newest
    when None), oldest first, and the cursor of the page before them (None: no more).
    Keyset paging on the event id: a bag with 20,000 events costs what a new one costs."""
    return paging.keyset_page(session, select(CustodyEvent).where(
        CustodyEvent.item_id == item_id), CustodyEvent.id, limit=limit, before=before)


@dataclass(frozen=True)
class ItemView:
    """An item with genealogy both ways, custody trail (or one page of it) and labels: the
    item's columns as they are, and what the API and the item page show around them."""

    item: Item
    item_id: str
    kind: str
    status: str
    coi_id: str
    batch_number: str | None
    description: str | None
    site_code: str
    location: str | None
    custodian: int | None
    ship_to: str | None
    expires_at: datetime | None
    expiry_warnings: str | None
    post_thaw_window: str | None
    thawed_at: datetime | None
    created_at: datetime
    parents: list[str]
    children: list[str]
    ancestors: list[str]
    descendants: list[str]
    labels: list[LabelRecord]
    administration: Administration | None
    post_thaw_deadline: datetime | None
    release_warnings: list[dict[str, str]]
    custody: list[CustodyEvent]
    custody_older: int | None  # the cursor of the page before (None: no more)


def item_view(session: Session, item_id: str, *, custody_limit: int | None = None,
              custody_before: int | None = None) -> ItemView:
    """An item with genealogy both ways, custody trail and labels. With
    ``custody_limit``, one page of the custody trail (the newest, or the one before
    ``custody_before``) and ``custody_older``, the cursor of the page before it."""
    item = get_item(session, item_id)
    tree = genealogy(session, item.item_id)
    older: int | None = None
    if custody_limit is None:
        events = custody_trail(session, item.item_id)
    else:
        events, older = custody_page(session, item.item_id, limit=custody_limit,
                                     before=custody_before)
    return ItemView(
        item=item, item_id=item.item_id, kind=item.kind, status=item.status,
        coi_id=item.coi_id, batch_number=item.batch_number, description=item.description,
        site_code=item.site_code, location=item.location, custodian=item.custodian,
        ship_to=item.ship_to, expires_at=item.expires_at,
        expiry_warnings=item.expiry_warnings, post_thaw_window=item.post_thaw_window,
        thawed_at=item.thawed_at, created_at=item.created_at,
        parents=parents_of(session, item.item_id),
        children=children_of(session, item.item_id),
        ancestors=tree["ancestors"],
        descendants=tree["descendants"],
        labels=labels_of(session, item.item_id),
        administration=administration_of(session, item.item_id),
        post_thaw_deadline=post_thaw_deadline(item),
        release_warnings=_bedside_warnings(session, item)
        if item.kind == ItemKind.FINAL_PRODUCT else [],
        custody=events, custody_older=older,
    )


# Who may read a patient's name, date of birth and MRN (GDPR Art. 5(1)(c) data
# minimisation, SPEC §7): people of the patient's treatment or collection sites, QA
# (release needs the identity) and admins; everyone else sees the COI and initials.
IDENTITY_FIELDS = ("given_name", "family_name", "date_of_birth", "mrn")
IDENTITY_ROLES = frozenset({"qa", "admin"})


def initials(patient: Patient) -> str:
    return f"{patient.given_name[:1]}.{patient.family_name[:1]}.".upper()


def may_see_identity(session: Session, patient: Patient, viewer: Person | None) -> bool:
    """True when ``viewer`` (a user; None: the system itself) may read the identity."""
    if viewer is None or IDENTITY_ROLES.intersection(viewer.roles):
        return True
    site = viewer.site.code
    if site == patient.treatment_site:
        return True
    return session.scalar(
        select(Collection.id).where(Collection.coi_id == patient.coi_id,
                                    Collection.site_code == site).limit(1)
    ) is not None


@dataclass(frozen=True)
class PatientView:
    """A patient with items (the wristband included), collections and batches. The four
    identity fields are None when the viewer may not see them (``identity_visible``);
    the output schema then leaves them out."""

    id: int
    coi_id: str
    treatment_site: str
    wristband_item_id: str | None
    enrolled_at: datetime
    enrolled_by: int | None
    identity_visible: bool
    initials: str
    coi_label: str
    coi_check: str
    items: list[Item]
    collections: list[Collection]
    batches: list[BatchBrief]
    patient: Patient | None = None  # only when the identity is visible
    given_name: str | None = None
    family_name: str | None = None
    date_of_birth: date | None = None
    mrn: str | None = None


def patient_view(session: Session, coi_id: str, viewer: Person | None = None) -> PatientView:
    """A patient with items (the wristband included), collections and batches. With
    ``viewer``, name, date of birth and MRN only when that user may see them
    (:func:`may_see_identity`); ``initials`` always, ``identity_visible`` says which."""
    patient = get_patient(session, coi_id)
    visible = may_see_identity(session, patient, viewer)
    label, check = coi.format_for_label(patient.coi_id)
    return PatientView(
        id=patient.id, coi_id=patient.coi_id, treatment_site=patient.treatment_site,
        wristband_item_id=patient.wristband_item_id, enrolled_at=patient.enrolled_at,
        enrolled_by=patient.enrolled_by,
        identity_visible=visible,
        initials=initials(patient),
        coi_label=label,
        coi_check=check,
        items=items_of_coi(session, patient.coi_id),
        collections=collections_of(session, patient.coi_id),
        batches=[brief for source in registry.patient_batches.providers()
                 for brief in source(session, patient.coi_id)],
        patient=patient if visible else None,
        given_name=patient.given_name if visible else None,
        family_name=patient.family_name if visible else None,
        date_of_birth=patient.date_of_birth if visible else None,
        mrn=patient.mrn if visible else None,
    )


def _identity_visible_clause(viewer: Person | None) -> ColumnElement[bool]:
    """SQL form of :func:`may_see_identity` for a list: the patient's treatment site or
    a collection site of theirs is the viewer's, or the viewer is QA or admin."""
    if viewer is None or IDENTITY_ROLES.intersection(viewer.roles):
        return true()
    site = viewer.site.code if viewer.site is not None else None
    collected_here = exists().where(Collection.coi_id == Patient.coi_id,
                                    Collection.site_code == site)
    return (Patient.treatment_site == site) | collected_here


@dataclass(frozen=True)
class PatientRow:
    """One line of the patient list: identity fields only when the viewer may see them."""

    coi_id: str
    initials: str
    treatment_site: str
    enrolled_at: datetime
    identity_visible: bool
    given_name: str | None = None
    family_name: str | None = None
    date_of_birth: date | None = None
    mrn: str | None = None


def search_patients(session: Session, text: str | None, viewer: Person | None, *, limit: int = 50,
                    offset: int = 0) -> list[PatientRow]:
    """Patients newest first, found by COI (any patient: the COI is not identifying), or
    by name or MRN among the patients whose identity ``viewer`` may see (GDPR Art.
    5(1)(c), SPEC §7): a search by name never tells who else is enrolled."""
    visible = _identity_visible_clause(viewer)
    statement = select(Patient, visible.label("visible"))
    words = [w for w in (text or "").strip().split() if w][:6]
    if words:
        compact = "".join(words).upper()
        coi_like = compact.replace("*", "").isalnum()  # a COI's check may be '*'
        by_coi = Patient.coi_id.startswith(compact, autoescape=True) if coi_like else false()
        by_mrn = func.lower(Patient.mrn) == " ".join(words).lower()
        by_name: ColumnElement[bool] | None = None
        for word in words:
            term = word.lower()
            one = or_(func.lower(Patient.given_name).contains(term, autoescape=True),
                      func.lower(Patient.family_name).contains(term, autoescape=True))
            by_name = one if by_name is None else by_name & one
        assert by_name is not None  # words is not empty
        statement = statement.where(or_(by_coi, visible & or_(by_mrn, by_name)))
    statement = statement.order_by(Patient.enrolled_at.desc(), Patient.id.desc())
    rows = []
    for patient, shown in session.execute(statement.limit(limit).offset(offset)):
        shown = bool(shown)
        rows.append(PatientRow(
            coi_id=patient.coi_id, initials=initials(patient),
            treatment_site=patient.treatment_site, enrolled_at=patient.enrolled_at,
            identity_visible=shown,
            given_name=patient.given_name if shown else None,
            family_name=patient.family_name if shown else None,
            date_of_birth=patient.date_of_birth if shown else None,
            mrn=patient.mrn if shown else None,
        ))
    return rows


def _asset_target(session: Session, check: labels.PayloadCheck) -> tuple[str, str] | None:
    """The page of the lot or equipment a verified label names (None when no domain knows
    it or gives no page); a refused label is refused with its reason."""
    assert check.payload is not None
    if check.reasons:
        code, message = check.reasons[0]
        raise conflict(code, f"label: the scanned label is refused: {message}",
                       extra={"reasons": [{"code": c, "message": m} for c, m in check.reasons]})
    subject = scanned_subject(session, check.payload.kind_code, check.payload.subject_id)
    return ("url", subject.url) if subject is not None and subject.url else None


def find_target(session: Session, text: str) -> tuple[str, str] | None:
    """What the header's search box opens for ``text``: ("item", id) for an item id or
    a scanned label of this system (verified: a forged or voided one is refused with its
    reason), ("patient", COI) for a COI ID, ("url", its page) for a verified LOT or EQP
    label whose domain answers it (SPEC §11); None when none of these."""
    if labels.normalise_scan(text).startswith("GMP1:"):
        check = labels.check_payload(session, text)
        if check.payload is not None and check.payload.asset:
            return _asset_target(session, check)
        return "item", resolve_item_ref(session, text, field_name="label")
    key = text.strip().upper().replace(" ", "")
    if key.startswith("ITM-") and key.isprintable():
        found = session.scalar(select(Item.item_id).where(Item.item_id == key))
        return ("item", found) if found else None
    if coi.coi_problem(key) is None:
        found = session.scalar(select(Patient.coi_id).where(Patient.coi_id == key))
        return ("patient", found) if found else None
    return None
