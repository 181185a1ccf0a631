"""Read side of the audit trail: filtered searches for the API and the audit page."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes.audit import format_time
from gmp_mes.models import AuditEvent


def search_events(
    session: Session,
    *,
    entity_type: str | None = None,
    entity_id: str | None = None,
    username: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEvent]:
    """Events newest first; every filter is optional."""
    statement = select(AuditEvent).order_by(AuditEvent.seq.desc())
    if entity_type:
        statement = statement.where(AuditEvent.entity_type == entity_type)
    if entity_id:
        statement = statement.where(AuditEvent.entity_id == entity_id)
    if username:
        statement = statement.where(AuditEvent.username == username)
    if since:
        statement = statement.where(AuditEvent.occurred_at >= format_time(since))
    if until:
        statement = statement.where(AuditEvent.occurred_at < format_time(until))
    return list(session.scalars(statement.limit(limit).offset(offset)))
