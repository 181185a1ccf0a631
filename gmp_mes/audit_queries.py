"""Read side of the audit trail: filtered searches for the API, the audit page and its
CSV export (keyset paging on ``seq``, so page 1,000 costs what page 1 costs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from gmp_mes import audit
from gmp_mes.audit import format_time
from gmp_mes.models import AuditEvent

# Any select of (columns of) audit events: the filters keep its row type.
_Statement = TypeVar("_Statement", bound="Select[*tuple[Any, ...]]")


def _filtered(
    statement: _Statement,
    *,
    entity_type: str | None = None,
    entity_id: str | None = None,
    username: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> _Statement:
    if entity_type:
        statement = statement.where(AuditEvent.entity_type == entity_type)
    if entity_id:
        statement = statement.where(AuditEvent.entity_id == entity_id)
    if username:
        statement = statement.where(AuditEvent.username == username)
    if action:
        statement = statement.where(AuditEvent.action == action)
    if since:
        statement = statement.where(AuditEvent.occurred_at >= format_time(since))
    if until:
        statement = statement.where(AuditEvent.occurred_at < format_time(until))
    return statement


def search_events(
    session: Session,
    *,
    limit: int = 100,
    offset: int = 0,
    before: int | None = None,
    after: int | None = None,
    **filters: Any,
) -> list[AuditEvent]:
    """Events newest first; every filter is optional. ``before``/``after`` (a ``seq``)
    page by key: the ``limit`` events just older (newer) than that event."""
    if after is not None:
        statement = _filtered(select(AuditEvent), **filters).where(AuditEvent.seq > after)
        statement = statement.order_by(AuditEvent.seq.asc()).limit(limit).offset(offset)
        return list(reversed(list(session.scalars(statement))))
    statement = _filtered(select(AuditEvent), **filters).order_by(AuditEvent.seq.desc())
    if before is not None:
        statement = statement.where(AuditEvent.seq < before)
    return list(session.scalars(statement.limit(limit).offset(offset)))


def has_newer(session: Session, seq: int, **filters: Any) -> bool:
    statement = _filtered(select(AuditEvent.seq), **filters).where(AuditEvent.seq > seq)
    return session.scalar(statement.limit(1)) is not None


def stream_events(connection: Connection, *, chunk: int = 1000,
                  **filters: Any) -> Iterator[tuple[int, str, str]]:
    """(seq, record, hash) of every matching event, newest first, read ``chunk`` rows at a
    time by key, so an export of millions of events holds one chunk in memory."""
    before: int | None = None
    while True:
        statement = _filtered(select(AuditEvent.seq, AuditEvent.record, AuditEvent.hash), **filters)
        if before is not None:
            statement = statement.where(AuditEvent.seq < before)
        rows = connection.execute(statement.order_by(AuditEvent.seq.desc()).limit(chunk)).all()
        yield from ((row.seq, row.record, row.hash) for row in rows)
        if len(rows) < chunk:
            return
        before = rows[-1].seq


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def changes_of(record: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    """(field, old or None, new) per field of an event, for people: an update lists the
    fields that changed (old → new), an insert or explicit event its values."""
    old = record.get("old") or {}
    new = record.get("new") or {}
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [("value", _shown(old) if old else None, _shown(new))]
    if old:
        fields = list(old) + [k for k in new if k not in old]
        return [(k, _shown(old.get(k)), _shown(new.get(k))) for k in fields
                if old.get(k) != new.get(k) or k in old]
    return [(k, None, _shown(v)) for k, v in new.items()]


def record_export(session: Session, filters: dict[str, Any], *, fmt: str = "csv") -> None:
    """An export of the trail is itself an auditable act (21 CFR 11.10(b), (e)): who
    exported, when (the event's own time) and with which filters (all of them, none
    left out; an empty dict is the whole trail)."""
    audit.record(session, "audit.exported", "audit_trail", fmt,
                 new={"format": fmt, "filters": dict(sorted(filters.items()))})
