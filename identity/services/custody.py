"""Chain of custody: :func:`record_custody`, the one place the custody rules live
(SPEC §7)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes import audit, registry
from gmp_mes.accounts import Person
from gmp_mes.alerts import AlertSpec, raise_alert
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.errors import Expired, FollowUp, Forbidden, InvalidTransition, conflict, field_error
from gmp_mes.models import User
from identity.models import CustodyEvent, Item, ItemStatus
from identity.services._common import _custody, _item_holds, _site
from identity.services.items import transition_item
from identity.services.lookup import get_item
from identity.services.rules import (
    CUSTODY_ACTIONS,
    CUSTODY_ROLES,
    FINAL_STATUSES,
    is_expired,
    post_thaw_deadline,
)

S = ItemStatus


def _site_refused(detail: str) -> Forbidden:
    """403 ``site_mismatch``: the caller is not a user of the site where the action happens."""
    error = Forbidden(detail)
    error.code = "site_mismatch"  # type: ignore[misc]
    return error


def _wrong_destination_follow_up(item: Item, at: str, expected: str, user: Person) -> FollowUp:
    """A bag arriving where it was not sent is a chain-of-custody event QA must know of,
    even though the receipt itself is refused: the alert is raised in its own transaction."""
    item_id, coi_id = item.item_id, item.coi_id

    def follow_up(session: Session) -> None:
        session.info["actor"] = Actor(user.username, user.id, user.full_name)
        raise_alert(session, AlertSpec(
            cause=f"wrong_destination:{item_id}:{expected}:{at}",
            kind="wrong_destination", severity="major", subject_type="item",
            subject_id=item_id,
            message=f"item {item_id} (COI {coi_id}) shipped to {expected} was presented for "
                    f"receipt at {at} by {user.username}; the receipt was refused",
            roles=("qa", "operator", "clinician"), site_code=expected,
        ))
        session.flush()

    return follow_up


def _custody_recipient(session: Session, username: str | None, item: Item,
                       user: Person) -> User:
    """Handover names the person who takes custody: a user of the item's site."""
    if username is None or not username.strip():
        recipient = session.get(User, user.id)
        assert recipient is not None
        return recipient
    name = username.strip().lower()
    recipient = session.scalar(select(User).where(User.username == name))
    if recipient is None or not recipient.active:
        raise field_error("to_user", f"no active user {username.strip()!r}")
    if not recipient.has_role(*CUSTODY_ROLES):
        raise field_error("to_user", f"{recipient.username} holds no role that takes custody")
    if recipient.site.code != item.site_code:
        raise conflict("handover_other_site",
                       f"{recipient.username} is a user of {recipient.site.code}; item "
                       f"{item.item_id} is at {item.site_code}: a handover stays within the "
                       "site (ship and receive to take it elsewhere)")
    return recipient


def _storage(session: Session, item: Item, action: str, site_code: str,
              position: str | None) -> str | None:
    """Free the item's storage position when it moves, ships or thaws; place it at
    ``position`` (move, receive). The position text, which becomes the location."""
    providers = registry.storage_positions.providers()
    if position is not None and not providers:
        raise field_error("position", "no storage positions are kept in this installation")
    for storage in providers:
        if position is not None:
            return storage.place(session, item.item_id, position, site_code=site_code)
        storage.vacate(session, item.item_id)
    return None


def _refuse_held(session: Session, item: Item, action: str) -> None:
    """SPEC §14: a held item (``registry.item_holds``: a shipment's temperature excursion
    or missing log waiting for QA's disposition) is neither sent on nor thawed until QA
    decides; 409 with the hold's code (``temperature_excursion`` /
    ``temperature_unknown``). Asked with the item row locked, so every shipment
    (logistics ships through here) and every thaw meets this one check. Receipt, moves
    and handovers stay allowed: the item must still be stored and looked after."""
    holds = _item_holds(session, item.item_id)
    if holds:
        verb = {"ship": "shipped", "thaw": "thawed"}[action]
        raise conflict(holds[0]["code"], f"{holds[0]['message']}; it cannot be {verb}",
                       extra={"reasons": holds})


def record_custody(
    session: Session,
    item_id: str,
    *,
    action: str,
    site: str,
    user: Person,
    location: str | None = None,
    workstation: str | None = None,
    to_user: str | None = None,
    position: str | None = None,
) -> CustodyEvent:
    """One custody action, recorded at the caller's own site only (SPEC §7):

    - ``handover`` at the item's site: custody passes to ``to_user`` (a user of that
      site), or to the caller when none is named;
    - ``move`` changes the location inside the item's site, never the site;
    - ``ship`` leaves the item's site for ``site``, the destination;
    - ``receive`` happens at the shipment's destination, by a user of that site;
    - ``thaw`` where the item is (starts the post-thaw window).

    Refusals: 403 ``site_mismatch`` (the caller is of another site), 409
    ``move_changes_site``, ``not_at_site``, ``wrong_destination`` (QA alerted),
    ``in_transit``, ``handover_other_site``, ``temperature_excursion`` /
    ``temperature_unknown`` (ship or thaw of a held item). This is the one place these
    rules live.

    ``position`` (``move`` and ``receive``, SPEC §14): the storage position the item is
    put in (``registry.storage_positions``; 409 ``position_occupied``), recorded as its
    location; a move, ship or thaw takes it out of the position it had."""
    if action not in CUSTODY_ACTIONS:
        raise field_error("action", f"must be one of {', '.join(CUSTODY_ACTIONS)}")
    if not user.has_role(*CUSTODY_ROLES):
        raise Forbidden("custody is recorded by the people who handle the item; an admin "
                        "account cannot record it")
    target = _site(session, site, "site")
    mine = user.site.code
    location = location.strip() if location and location.strip() else None
    position = position.strip() if position and position.strip() else None
    if position is not None and action not in ("move", "receive"):
        raise field_error("position", "a storage position is given on move and receive only")
    item = get_item(session, item_id, for_update=True)
    if item.status in FINAL_STATUSES:
        raise InvalidTransition(f"item {item.item_id} is {item.status}: no custody change")
    now = utcnow()
    if action in ("ship", "thaw") and is_expired(item, now):
        # Receipt and handovers of an expired item are still recorded; sending it on or
        # thawing it for infusion is not allowed.
        verb = {"ship": "shipped", "thaw": "thawed"}[action]
        raise Expired(f"item {item.item_id} has expired; it cannot be {verb}")
    if action in ("ship", "thaw"):
        _refuse_held(session, item, action)
    if action == "ship":
        if mine != item.site_code:
            raise _site_refused(f"item {item.item_id} is at {item.site_code}: a shipment is "
                                f"recorded by a user of {item.site_code}, the site it leaves "
                                f"(you are a user of {mine})")
    elif action == "receive":
        expected = item.ship_to
        if item.status == S.SHIPPED and expected is not None and target.code != expected:
            raise conflict(
                "wrong_destination",
                f"item {item.item_id} was shipped to {expected}, not to {target.code}: it is "
                f"received only at its destination; QA is alerted",
                extra={"expected_site": expected},
                follow_up=_wrong_destination_follow_up(item, target.code, expected, user),
            )
        if mine != target.code:
            raise _site_refused(f"a receipt at {target.code} is recorded by a user of "
                                f"{target.code} (you are a user of {mine})")
    else:  # handover, move, thaw: where the item is
        if item.status == S.SHIPPED:
            raise conflict("in_transit",
                           f"item {item.item_id} is in transit to {item.ship_to or '?'}: it "
                           "must be received at its destination first")
        if target.code != item.site_code:
            if action == "move":
                raise conflict(
                    "move_changes_site",
                    f"item {item.item_id} is at {item.site_code}: a move changes the location "
                    f"inside that site, never the site; to take it to {target.code}, ship it "
                    "and receive it there")
            raise conflict("not_at_site",
                           f"item {item.item_id} is at {item.site_code}, not at {target.code}: "
                           f"a {action} is recorded where the item is")
        if mine != item.site_code:
            raise _site_refused(f"item {item.item_id} is at {item.site_code}: a {action} there "
                                f"is recorded by a user of {item.site_code} (you are a user "
                                f"of {mine})")
    if action != "handover":
        location = _storage(session, item, action, target.code, position) or location
    if action == "handover":
        recipient = _custody_recipient(session, to_user, item, user)
        event = _custody(session, item, action, site_code=item.site_code, location=location,
                         workstation=workstation,
                         detail={"from_custodian": item.custodian, "to_user": recipient.username})
        item.custodian = recipient.id
        item.location = location or item.location
    elif action == "move":
        event = _custody(session, item, action, site_code=item.site_code, location=location,
                         workstation=workstation, detail={"from_location": item.location})
        item.location = location
    elif action == "ship":
        if target.code == item.site_code:
            raise field_error("site", "the destination is the site the item is already at")
        transition_item(session, item.item_id, S.SHIPPED, reason=f"shipped to {target.code}")
        event = _custody(session, item, action, site_code=item.site_code,
                         location=item.location, destination=target.code,
                         workstation=workstation)
        item.ship_to = target.code
        item.custodian = user.id
    elif action == "receive":
        transition_item(session, item.item_id, S.RECEIVED, reason=f"received at {target.code}")
        event = _custody(session, item, action, site_code=target.code, location=location,
                         workstation=workstation)
        item.site_code, item.location, item.ship_to = target.code, location, None
        item.custodian = user.id
    else:  # thaw
        transition_item(session, item.item_id, S.THAWED, reason=f"thawed at {target.code}")
        item.thawed_at = now
        deadline = post_thaw_deadline(item)
        event = _custody(session, item, action, site_code=item.site_code, location=location,
                         workstation=workstation,
                         detail={"administer_before": audit.format_time(deadline)}
                         if deadline else None)
        item.location = location or item.location
    session.flush()
    return event
