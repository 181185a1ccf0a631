"""Private helpers of the identity service modules (not re-exported): the actor, site
and duration checks, the custody-event writer, scan reasons and release warnings."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from flask import current_app, has_app_context
from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

import labels.services as labels
from gmp_mes import audit, registry
from gmp_mes.alerts import AlertSpec, raise_alert
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.durations import parse_duration
from gmp_mes.errors import field_error
from gmp_mes.models import Site
from identity.models import CustodyEvent, Item, ItemStatus
from identity.services.lookup import printable
from identity.services.rules import ITEM_ID_ALPHABET, ItemFacts, is_expired, post_thaw_deadline

S = ItemStatus


def _actor(session: Session) -> Actor:
    actor = session.info.get("actor")
    if actor is None:
        raise audit.MissingActor("identity write without an actor")
    return actor


def _facility_id() -> str:
    if has_app_context():
        return current_app.config["GMP_SETTINGS"].facility_id
    raise RuntimeError("COI IDs are assigned inside an application context (facility id)")


def _site(session: Session, code: str, field_name: str) -> Site:
    if not isinstance(code, str) or not code.isprintable():
        raise field_error(field_name, "must not contain control characters")
    site = session.scalar(select(Site).where(Site.code == (code or "").strip().upper()))
    if site is None:
        raise field_error(field_name, f"no site with code {code!r}")
    return site


def _durations(values: Iterable[Any], field_name: str) -> list[str]:
    out = []
    for value in values:
        text = value if isinstance(value, str) else None
        try:
            if text is None:
                raise ValueError
            parse_duration(text)
        except ValueError:
            raise field_error(field_name, f"{value!r} is not an ISO 8601 duration") from None
        out.append(text.strip().upper())
    return out


def _new_item_id(session: Session) -> str:
    while True:
        candidate = "ITM-" + "".join(secrets.choice(ITEM_ID_ALPHABET) for _ in range(8))
        if session.get(Item, candidate) is None:
            return candidate


def _custody(
    session: Session,
    item: ItemFacts,
    action: str,
    *,
    site_code: str | None,
    location: str | None = None,
    destination: str | None = None,
    workstation: str | None = None,
    ok: bool | None = None,
    flagged: bool = False,
    detail: Any = None,
) -> CustodyEvent:
    """Append one custody event and its audit event.

    Written with one Core INSERT rather than through the unit of work: it runs on every
    scan, and the row is append-only, so there is no later change to track. The audit
    event carries the same columns the mapper hooks would record."""
    actor = _actor(session)
    values = {
        "item_id": item.item_id,
        "action": action,
        "site_code": site_code,
        "location": printable(location, 100) if location else None,
        "destination_site": destination,
        "user_id": actor.user_id,
        "username": actor.username,
        "workstation": printable(workstation, 100) if workstation else None,
        "occurred_at": utcnow(),
        "ok": ok,
        "flagged": flagged,
        "detail": json.dumps(detail, sort_keys=True) if detail is not None else None,
    }
    session.flush()  # a new item must be in the database before its first event
    event_id: int = session.connection().execute(_INSERT_CUSTODY, values).scalar_one()
    audit.record(session, "create", CustodyEvent.audit_entity, str(event_id),
                 new={"id": event_id, **values})
    return CustodyEvent(id=event_id, **values)  # transient: the row as written


_CUSTODY_TABLE = cast(Table, CustodyEvent.__table__)
_INSERT_CUSTODY = _CUSTODY_TABLE.insert().returning(_CUSTODY_TABLE.c.id)


_ITEM_ROW = select(Item.__table__).where(Item.__table__.c.item_id == bindparam("item_id"))


def _item_row(session: Session, item_id: str) -> ItemFacts | None:
    """The item's row as it is now, without loading it into the session."""
    row = session.connection().execute(_ITEM_ROW, {"item_id": item_id}).first()
    return cast("ItemFacts | None", row)  # a Row answers every column by name


def _r(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def _forged_alert(session: Session, payload_text: str, code: str, message: str,
                  site_code: str | None, workstation: str | None, subject: str) -> None:
    severity = "critical" if code == "bad_signature" else "major"
    what = "forged or altered label" if code == "bad_signature" else "voided label"
    raise_alert(session, AlertSpec(
        cause=f"label_{code}:{labels.payload_digest(payload_text)}",
        kind="label_forged" if code == "bad_signature" else "label_voided",
        severity=severity, subject_type="item", subject_id=subject[:80],
        message=f"{what} scanned at {printable(workstation or 'unknown workstation', 100)} "
                f"({site_code or '-'}): {message}",
        roles=("qa",), site_code=site_code,
    ))


def _bedside_warnings(session: Session, item: Item) -> list[dict[str, str]]:
    if not item.batch_number:
        return []
    # What the release still waits for comes from above (qc, through the registry seam).
    return [w for source in registry.release_warnings.providers()
            for w in source(session, item.batch_number)]


def _item_holds(session: Session, item_id: str) -> list[dict[str, str]]:
    """Holds the domains above keep on the item (a shipment's temperature excursion
    waiting for QA: ``registry.item_holds``, SPEC §14)."""
    return [hold for source in registry.item_holds.providers()
            for hold in source(session, item_id)]


def _item_problems(item: ItemFacts, now: datetime) -> list[dict[str, str]]:
    """Status and expiry reasons shared by scans and the bedside."""
    reasons = []
    if item.status == S.BLOCKED:
        reasons.append(_r("blocked", f"item {item.item_id} is under a quality block"))
    if is_expired(item, now):
        when = item.expires_at.strftime("%Y-%m-%d %H:%M UTC") if item.expires_at else "-"
        reasons.append(_r("expired", f"item {item.item_id} expired ({when})"))
    deadline = post_thaw_deadline(item)
    if item.status == S.THAWED and deadline is not None and deadline <= now:
        reasons.append(_r("post_thaw_window_exceeded",
                          f"thawed {item.thawed_at:%H:%M} UTC; the post-thaw limit "
                          f"{item.post_thaw_window} passed at {deadline:%H:%M} UTC"))
    return reasons
