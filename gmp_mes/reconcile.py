"""The trail checks the records: every audited record's current state against the
values its audit events last gave it (21 CFR 11.10(e), EU GMP Annex 11 §9).

The hash chain proves the events unchanged; it says nothing about the records. An
UPDATE written straight into the database (a patient's name, an item's status)
leaves the chain intact, so ``audit verify`` also folds each record's events
(``create`` values, then each ``update``'s new values, ``delete``) and compares the
result with the row as it is now, naming every difference: a change made outside
the application, a record inserted without its event, or one that disappeared.

Only the columns an event recorded are compared (a column added by a later
migration has no audited value yet); redacted columns compare as redacted.
Memory grows with the number of records of one entity type (one type at a time).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, lazyload

from gmp_mes import audit
from gmp_mes.audit import Audited
from gmp_mes.db import Base

MISSING = object()


@dataclass(frozen=True)
class Difference:
    entity_type: str
    entity_id: str
    column: str | None  # None: the whole record (missing, or never audited)
    audited: Any
    current: Any

    def __str__(self) -> str:
        if self.column is None:
            return f"{self.entity_type} {self.entity_id}: {self.current}"
        return (f"{self.entity_type} {self.entity_id}: {self.column} is "
                f"{json.dumps(self.current, ensure_ascii=False)} but the audit trail last "
                f"recorded {json.dumps(self.audited, ensure_ascii=False)}")


def audited_models() -> dict[str, type[Audited]]:
    """Entity type -> model, for every mapped Audited model."""
    models: dict[str, type[Audited]] = {}
    for mapper in Base.registry.mappers:
        cls = mapper.class_
        if issubclass(cls, Audited) and getattr(cls, "audit_entity", None):
            models[cls.audit_entity] = cls
    return models


def _audited_state(session: Session, entity_type: str) -> dict[str, dict[str, Any] | None]:
    """entity id -> last audited values (None: deleted), folded from the trail in order."""
    connection = session.connection()
    rows = connection.execute(
        text("SELECT entity_id, action, record FROM audit_event WHERE entity_type = :t "
             "AND action IN ('create', 'update', 'delete') ORDER BY seq"),
        {"t": entity_type},
    )
    state: dict[str, dict[str, Any] | None] = {}
    loads = json.loads
    for entity_id, action, record in rows:
        if action == "delete":
            state[entity_id] = None
            continue
        new = loads(record).get("new")
        if not isinstance(new, dict):
            continue
        values = state.get(entity_id)
        if action == "create" or values is None:
            state[entity_id] = dict(new)
        else:
            values.update(new)
    return state


def differences(session: Session, batch: int = 2_000) -> Iterator[Difference]:
    """Every difference between the audited records and the trail, entity type by type."""
    for entity_type, model in sorted(audited_models().items()):
        yield from _differences_of(session, entity_type, model, batch)


def _differences_of(
    session: Session, entity_type: str, model: type[Audited], batch: int
) -> Iterator[Difference]:
    state = _audited_state(session, entity_type)
    rows = session.scalars(
        select(model).options(lazyload("*")).execution_options(yield_per=batch)
    )
    for obj in rows:
        key = obj.audit_key()
        audited = state.pop(key, MISSING)
        if audited is MISSING:
            yield Difference(entity_type, key, None, None,
                             "exists but has no audit event (written outside the application)")
            continue
        if audited is None:
            yield Difference(entity_type, key, None, None,
                             "exists although the audit trail recorded its deletion")
            continue
        current = audit.snapshot(obj)
        for column, value in sorted(audited.items()):
            now = current.get(column, MISSING)
            if now is MISSING:
                continue  # no longer a column of this record
            if not _same(value, now):
                yield Difference(entity_type, key, column, value, now)
    session.expunge_all()
    for key, audited in sorted(state.items()):
        if audited is not None:
            yield Difference(entity_type, key, None, None,
                             "is in the audit trail but no longer in the database")


def _same(audited: Any, current: Any) -> bool:
    if audited == current:
        return True
    # Numbers: 250 and 250.0 are the same value, as JSON has no integer type.
    if isinstance(audited, int | float) and isinstance(current, int | float):
        return float(audited) == float(current)
    return False
