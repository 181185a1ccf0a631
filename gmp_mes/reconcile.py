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

:func:`differences_since` does the same for the records with events after a given
event only (``audit verify --since-checkpoint``): the day's active records, each with
its whole history (read through the ``(entity_type, entity_id)`` index).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import bindparam, inspect, select, text
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


def _compare(
    entity_type: str, key: str, audited: dict[str, Any], current: dict[str, Any]
) -> Iterator[Difference]:
    for column, value in sorted(audited.items()):
        now = current.get(column, MISSING)
        if now is MISSING:
            continue  # no longer a column of this record
        if not _same(value, now):
            yield Difference(entity_type, key, column, value, now)


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
    return _fold(rows)


def _fold(rows: Iterable[Any]) -> dict[str, dict[str, Any] | None]:
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
        if key not in state:
            yield Difference(entity_type, key, None, None,
                             "exists but has no audit event (written outside the application)")
            continue
        audited = state.pop(key)
        if audited is None:
            yield Difference(entity_type, key, None, None,
                             "exists although the audit trail recorded its deletion")
            continue
        yield from _compare(entity_type, key, audited, audit.snapshot(obj))
    session.expunge_all()
    for key, audited in sorted(state.items()):
        if audited is not None:
            yield Difference(entity_type, key, None, None,
                             "is in the audit trail but no longer in the database")


def differences_since(session: Session, after_seq: int, chunk: int = 500
                      ) -> Iterator[Difference]:
    """The records that have events after event ``after_seq``, against their whole trail."""
    models = audited_models()
    touched = session.connection().execute(
        text("SELECT DISTINCT entity_type, entity_id FROM audit_event WHERE seq > :s "
             "AND action IN ('create', 'update', 'delete')"), {"s": after_seq})
    by_type: dict[str, list[str]] = {}
    # The columns selected, typed (mypy unpacks a Row as object).
    for entity_type, entity_id in cast("Iterable[tuple[str, str]]", touched):
        if entity_type in models:
            by_type.setdefault(entity_type, []).append(entity_id)
    for entity_type, ids in sorted(by_type.items()):
        model = models[entity_type]
        for start in range(0, len(ids), chunk):
            yield from _differences_of_ids(session, entity_type, model, ids[start:start + chunk])


def _differences_of_ids(
    session: Session, entity_type: str, model: type[Audited], ids: list[str]
) -> Iterator[Difference]:
    rows = session.connection().execute(
        text("SELECT entity_id, action, record FROM audit_event WHERE entity_type = :t "
             "AND entity_id IN :ids AND action IN ('create', 'update', 'delete') "
             "ORDER BY seq").bindparams(bindparam("ids", expanding=True)),
        {"t": entity_type, "ids": ids},
    )
    state = _fold(rows)
    mapper = inspect(model)
    for key, audited in sorted(state.items()):
        if audited is None:
            continue
        pk = _primary_key(mapper, key, audited)
        obj = session.get(model, pk) if pk is not None else None
        if obj is None or obj.audit_key() != key:
            yield Difference(entity_type, key, None, None,
                             "is in the audit trail but no longer in the database")
            continue
        yield from _compare(entity_type, key, audited, audit.snapshot(obj))
    session.expunge_all()


def _primary_key(mapper: Any, key: str, audited: dict[str, Any]) -> tuple[Any, ...] | None:
    """The row's primary key: from its audited values, or the default audit key."""
    columns = mapper.primary_key
    names = [mapper.get_property_by_column(c).key for c in columns]
    if all(name in audited for name in names):
        return tuple(audited[name] for name in names)
    parts = key.split(":")
    if len(parts) != len(columns):
        return None
    try:
        return tuple(c.type.python_type(part) for c, part in zip(columns, parts, strict=True))
    except (TypeError, ValueError, NotImplementedError):
        return None


def _same(audited: Any, current: Any) -> bool:
    if audited == current:
        return True
    # Numbers: 250 and 250.0 are the same value, as JSON has no integer type.
    if isinstance(audited, int | float) and isinstance(current, int | float):
        return float(audited) == float(current)
    return False
