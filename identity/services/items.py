"""Containers: creation, the item state machine (:func:`transition_item`, the only
place a status changes), batch start and consumption, genealogy."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import labels.services as labels
from gmp_mes import audit
from gmp_mes.clock import utcnow
from gmp_mes.errors import CoiMismatch, InvalidTransition, conflict, field_error
from identity.models import CustodyAction, CustodyEvent, Item, ItemKind, ItemParent, ItemStatus
from identity.services._common import (
    _actor,
    _custody,
    _durations,
    _item_holds,
    _new_item_id,
    _site,
)
from identity.services.lookup import get_item, get_patient
from identity.services.rules import (
    CAUSE_GONE_STATUSES,
    FINAL_STATUSES,
    KIND_STATUSES,
    MAX_GENEALOGY,
    TO_HANDLE,
    TRANSITIONS,
    effective_deadline,
)

S = ItemStatus


def items_to_handle(
    session: Session, site_code: str, limit: int = 10
) -> list[tuple[Item, datetime | None]]:
    """Containers at a site that still need handling, the most urgent deadline first."""
    items = session.scalars(
        select(Item).where(Item.site_code == site_code, Item.status.in_(TO_HANDLE),
                           Item.kind != ItemKind.WRISTBAND.value)
    ).all()
    ranked = sorted(
        ((item, effective_deadline(item)) for item in items),
        key=lambda pair: (pair[1] is None, pair[1] or datetime.max.replace(tzinfo=UTC)),
    )
    return ranked[:limit]


def create_item(
    session: Session,
    *,
    kind: str,
    coi_id: str,
    site_code: str,
    status: str,
    parent_ids: Sequence[str] = (),
    batch_number: str | None = None,
    description: str | None = None,
    expires_at: datetime | None = None,
    expiry_warnings: Sequence[str] = (),
    post_thaw_window: str | None = None,
    location: str | None = None,
) -> Item:
    """A new container. Autologous rule: every parent has the same COI (409 coi_mismatch;
    also refused by a database trigger)."""
    if kind not in {k.value for k in ItemKind}:
        raise field_error("kind", f"must be one of {', '.join(k.value for k in ItemKind)}")
    if status not in KIND_STATUSES[kind]:
        raise field_error("status", f"a {kind} cannot be created in status {status!r}")
    if expires_at is not None and expires_at.tzinfo is None:
        raise field_error("expires_at", "must carry a time zone")
    warnings = _durations(expiry_warnings, "expiry_warnings")
    window = _durations([post_thaw_window], "post_thaw_window")[0] if post_thaw_window else None
    get_patient(session, coi_id)
    site = _site(session, site_code, "site_code")
    parents = [get_item(session, pid) for pid in dict.fromkeys(parent_ids)]
    foreign = [p.item_id for p in parents if p.coi_id != coi_id]
    if foreign:
        # The one unforgivable error: material of another patient (SPEC §1).
        raise CoiMismatch(
            f"autologous rule: {', '.join(foreign)} belong(s) to another COI than {coi_id}; "
            "material of two patients can never be combined"
        )
    actor = _actor(session)
    item = Item(
        item_id=_new_item_id(session),
        kind=kind,
        status=status,
        coi_id=coi_id,
        batch_number=batch_number,
        description=description,
        site_code=site.code,
        location=location,
        custodian=actor.user_id,
        expires_at=expires_at.astimezone(UTC) if expires_at else None,
        expiry_warnings=",".join(warnings) or None,
        post_thaw_window=window,
        created_at=utcnow(),
    )
    session.add(item)
    session.flush()
    for parent in parents:
        session.add(ItemParent(item_id=item.item_id, parent_id=parent.item_id))
    _custody(session, item, CustodyAction.CREATE, site_code=site.code, location=location,
             detail={"status": status, "parents": [p.item_id for p in parents]} if parents
             else {"status": status})
    session.flush()
    return item


def items_of_batch(session: Session, batch_number: str) -> list[Item]:
    return list(session.scalars(
        select(Item).where(Item.batch_number == batch_number).order_by(Item.created_at,
                                                                       Item.item_id)
    ))


def items_of_coi(session: Session, coi_id: str) -> list[Item]:
    return list(session.scalars(
        select(Item).where(Item.coi_id == coi_id).order_by(Item.created_at, Item.item_id)
    ))


def can_transition(item: Item, to_status: str) -> bool:
    return (
        item.status not in FINAL_STATUSES
        and to_status in TRANSITIONS.get(item.status, frozenset())
        and to_status in KIND_STATUSES[item.kind]
    )


def transition_item(
    session: Session, item_id: str, to_status: str, *, reason: str | None = None
) -> Item:
    """The item state machine (SPEC §2); illegal or from a final status -> 409."""
    item = get_item(session, item_id, for_update=True)
    if to_status not in {s.value for s in ItemStatus}:
        raise field_error("status", f"unknown item status {to_status!r}")
    if item.status in FINAL_STATUSES:
        raise InvalidTransition(
            f"item {item.item_id} is {item.status}, a final status: no further change"
        )
    if not can_transition(item, to_status):
        raise InvalidTransition(
            f"item {item.item_id} ({item.kind}) cannot go from {item.status} to {to_status}"
        )
    with audit.reason(session, reason):
        item.status = to_status
    if to_status in CAUSE_GONE_STATUSES:
        # Its expiry and hold-time alerts are about a container still to be used: once
        # it is consumed, administered or destroyed their cause is gone (issue 15).
        from gmp_mes.alerts import AlertKind, resolve_for_subject

        resolve_for_subject(
            session, "item", item.item_id,
            (AlertKind.EXPIRY_WARNING, AlertKind.EXPIRED, AlertKind.HOLD_TIME_EXCEEDED,
             AlertKind.POST_THAW_EXCEEDED),
            f"resolved: item {item.item_id} is {to_status}" + (f" ({reason})" if reason else ""))
    return item


def start_processing(session: Session, item_id: str, batch_number: str) -> Item:
    """Batch start (batches.start_batch): the starting material becomes ``in_process``
    for that batch (SPEC §2) and names it, so its label scans OK against that batch only.
    A held item (``registry.item_holds``: a shipment's temperature excursion waiting for
    QA, SPEC §14) starts no batch: 409 with the hold's code."""
    holds = _item_holds(session, item_id)
    if holds:
        raise conflict(holds[0]["code"], holds[0]["message"], extra={"reasons": holds})
    item = transition_item(session, item_id, S.IN_PROCESS,
                           reason=f"batch {batch_number} started")
    with audit.reason(session, f"batch {batch_number} started"):
        item.batch_number = batch_number
    session.flush()
    return item


def consume_starting_material(
    session: Session, item_id: str, batch_number: str, step_code: str
) -> Item | None:
    """The step that consumes the starting material was recorded: ``consumed`` (final, it
    can never feed anything again). Material of a batch started before this rule existed
    is consumed already and stays as it is."""
    item = get_item(session, item_id, for_update=True)
    if item.status != S.IN_PROCESS:
        return None
    return transition_item(session, item_id, S.CONSUMED,
                           reason=f"consumed by step {step_code} of batch {batch_number}")


def reject_starting_material(
    session: Session, item_id: str, batch_number: str, reason: str
) -> Item | None:
    """QA rejected the batch before its consuming step: the starting material still in
    process for it is rejected with it (it can feed no other batch, and leaves no
    ``in_process`` container behind). Material consumed or elsewhere stays as it is."""
    item = get_item(session, item_id, for_update=True)
    if item.status != S.IN_PROCESS or item.batch_number != batch_number:
        return None
    return transition_item(session, item_id, S.REJECTED, reason=f"batch rejected: {reason}")


def genealogy(session: Session, item_id: str) -> dict[str, list[str]]:
    """Ancestors and descendants of an item (ids, nearest first)."""
    def walk(start: str, up: bool) -> list[str]:
        seen: list[str] = []
        frontier = [start]
        while frontier and len(seen) < MAX_GENEALOGY:
            column, other = (
                (ItemParent.item_id, ItemParent.parent_id) if up
                else (ItemParent.parent_id, ItemParent.item_id)
            )
            found = list(session.scalars(select(other).where(column.in_(frontier))))
            frontier = [i for i in dict.fromkeys(found) if i not in seen and i != start]
            seen.extend(frontier)
        return seen

    return {"ancestors": walk(item_id, True), "descendants": walk(item_id, False)}


def parents_of(session: Session, item_id: str) -> list[str]:
    return list(session.scalars(
        select(ItemParent.parent_id).where(ItemParent.item_id == item_id)
        .order_by(ItemParent.parent_id)
    ))


def children_of(session: Session, item_id: str) -> list[str]:
    return list(session.scalars(
        select(ItemParent.item_id).where(ItemParent.parent_id == item_id)
        .order_by(ItemParent.item_id)
    ))


def custody_trail(session: Session, item_id: str) -> list[CustodyEvent]:
    return list(session.scalars(
        select(CustodyEvent).where(CustodyEvent.item_id == item_id).order_by(CustodyEvent.id)
    ))


def labels_of(session: Session, item_id: str) -> list[labels.LabelRecord]:
    return list(labels.labels_of_item(session, item_id))


def count_items(session: Session, **filters: object) -> int:
    statement = select(func.count()).select_from(Item)
    for key, value in filters.items():
        statement = statement.where(getattr(Item, key) == value)
    return session.scalar(statement) or 0
