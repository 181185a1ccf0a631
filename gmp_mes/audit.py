"""The audit trail: every change to a GMP record, hash-chained and append-only.

21 CFR 11.10(e) / EU GMP Annex 11 §9: secure, computer-generated, time-stamped
audit trails of operator entries and actions that create, modify or delete
records; changes must not obscure previously recorded information.

Events are collected as the transaction runs (an ``after_flush`` hook, explicit
:func:`record` calls) and appended to the chain in a ``before_commit`` step of the
same transaction, so a record and its event commit together or not at all.
Each event's hash covers the previous event's hash and its own canonical JSON.
Writers are serialised while they extend the chain: a transaction-scoped
advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite.

Lock order: the chain lock is the last lock a transaction takes, just before
COMMIT, after every row lock of its work. A transaction holding it waits for
nothing else, so it can never close a deadlock cycle with a scan or any other
writer (issue 13), and it is held for the append alone.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from typing import Any, ClassVar

from sqlalchemy import Connection, event, inspect, select, text
from sqlalchemy.orm import Session, object_session

from gmp_mes.clock import utcnow
from gmp_mes.db import Base

GENESIS_HASH = "0" * 64
# Arbitrary constant identifying the audit chain's advisory lock on PostgreSQL.
AUDIT_LOCK_KEY = 7_470_001


@dataclass(frozen=True)
class Actor:
    """Who a change is attributed to: a user, or a named system component."""

    username: str
    user_id: int | None = None
    printed_name: str | None = None

    @classmethod
    def system(cls, component: str) -> Actor:
        return cls(username=f"system:{component}")


class MissingActor(RuntimeError):
    """A GMP record was changed without anyone to attribute it to (a bug, never user input)."""


class Audited:
    """Mixin for GMP records: inserts and updates are audited automatically."""

    audit_entity: ClassVar[str]
    audit_redacted: ClassVar[frozenset[str]] = frozenset()
    audit_deletable: ClassVar[bool] = False

    def audit_key(self) -> str:
        state = inspect(self)
        return ":".join(str(v) for v in state.mapper.primary_key_from_instance(self))


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 text."""
    return json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def format_time(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_hash(prev_hash: str, record: str) -> str:
    return hashlib.sha256((prev_hash + record).encode()).hexdigest()


@contextmanager
def reason(session: Session, text_: str | None) -> Iterator[None]:
    """Attach a reason (required for corrections) to the events written inside."""
    previous = session.info.get("audit_reason")
    session.info["audit_reason"] = text_
    try:
        yield
        session.flush()  # the changes made inside are audited with this reason
    finally:
        session.info["audit_reason"] = previous


def record(
    session: Session,
    action: str,
    entity_type: str,
    entity_id: str,
    *,
    new: Any = None,
    old: Any = None,
    reason_: str | None = None,
) -> None:
    """Write an explicit event (a verdict, a login failure, a verification)."""
    _append(session, [(action, entity_type, entity_id, old, new, reason_)])


@dataclass(frozen=True)
class Entry:
    """One event of a bulk append (:func:`record_many`)."""

    action: str
    entity_type: str
    entity_id: str
    old: Any = None
    new: Any = None
    reason: str | None = None


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _jsonable_flat(value: Any) -> Any:
    """:func:`jsonable`, with a fast path for the flat dicts of bulk writers."""
    if type(value) is not dict:
        return jsonable(value)
    out = {}
    for key, item in value.items():
        kind = type(item)
        if type(key) is not str:
            return jsonable(value)
        if kind in _PLAIN:
            out[key] = item
        elif kind is datetime:
            out[key] = format_time(item)
        else:
            return jsonable(value)
    return out


def record_many(session: Session, entries: Iterable[Entry]) -> int:
    """Append many events in one statement: set-based writers (the expiry sweep).

    Same chain as :func:`record`. The events are queued with their actor and reason
    and appended at commit (:func:`append_queued`): the chain lock is taken, the head
    is read once, and every event gets the next ``seq``, the previous event's hash and
    its own hash, in order. Returns the number of events.
    """
    entries = list(entries)
    if not entries:
        return 0
    actor = _actor(session)
    _queue(session).append((actor, session.info.get("audit_reason"), entries))
    return len(entries)


def _queue(session: Session) -> list[tuple[Actor, str | None, list[Entry]]]:
    return session.info.setdefault("audit_queue", [])


def append_queued(session: Session) -> int:
    """Extend the chain with the events queued in this transaction (run before COMMIT).

    Takes the chain lock, so it is the last lock of the transaction; every event of one
    append carries the same time stamp, taken under the lock, so the time stamps follow
    the chain's order. Returns the number of events written."""
    queued = session.info.pop("audit_queue", None)
    if not queued:
        return 0
    connection = _lock_chain(session)
    last = head(connection)
    seq, prev_hash = (last.seq, last.hash) if last else (0, GENESIS_HASH)
    at_text = format_time(utcnow())
    dumps = _RECORD_ENCODER.encode
    sha256 = hashlib.sha256
    rows = []
    for actor, default_reason, entries in queued:
        for entry in entries:
            seq += 1
            why = entry.reason if entry.reason is not None else default_reason
            # Must stay byte-identical to the body verify_chain checks.
            record_text = dumps(
                {
                    "seq": seq,
                    "at": at_text,
                    "user_id": actor.user_id,
                    "username": actor.username,
                    "action": entry.action,
                    "entity_type": entry.entity_type,
                    "entity_id": entry.entity_id,
                    "reason": why,
                    "old": _jsonable_flat(entry.old),
                    "new": _jsonable_flat(entry.new),
                }
            )
            hash_ = sha256((prev_hash + record_text).encode()).hexdigest()
            rows.append((seq, record_text, prev_hash, hash_))
            prev_hash = hash_
    _insert_rows(connection, rows)
    return len(rows)


_RECORD_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@cache  # built once, on first use: the model is declared after this module
def _head_query() -> Any:
    table = Base.metadata.tables["audit_event"]
    return select(table.c.seq, table.c.hash).order_by(table.c.seq.desc()).limit(1)


# Below this many events, COPY's extra round trips cost more than it saves.
COPY_THRESHOLD = 20


def _insert_rows(connection: Connection, rows: list[tuple[int, str, str, str]]) -> None:
    """Straight to the driver: COPY for a PostgreSQL bulk append (thousands of events in
    one go); a plain INSERT otherwise, one round trip for the usual one or two events."""
    if connection.dialect.name == "postgresql" and len(rows) > COPY_THRESHOLD:
        cursor = connection.connection.dbapi_connection.cursor()  # same transaction
        try:
            with cursor.copy("COPY audit_event (seq, record, prev_hash, hash) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        finally:
            cursor.close()
        return
    marker = "%s" if connection.dialect.paramstyle in ("format", "pyformat") else "?"
    connection.exec_driver_sql(
        f"INSERT INTO audit_event (seq, record, prev_hash, hash) VALUES "
        f"({marker}, {marker}, {marker}, {marker})",
        rows if len(rows) > 1 else rows[0],
    )


def _actor(session: Session) -> Actor:
    actor = session.info.get("actor")
    if actor is None:
        raise MissingActor("GMP write without an actor: set session.info['actor']")
    return actor


def _lock_chain(session: Session) -> Connection:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK_KEY})
    return connection


def _append(session: Session, changes: list[tuple[str, str, str, Any, Any, str | None]]) -> None:
    record_many(session, [Entry(*change) for change in changes])


def _values(obj: Audited, *, changed_only: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    state = inspect(obj)
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for attr in state.mapper.column_attrs:
        key = attr.key
        history = state.attrs[key].history
        if changed_only and not history.has_changes():
            continue
        redact = key in obj.audit_redacted
        current = history.added[0] if history.added else getattr(obj, key)
        new[key] = "[redacted]" if redact else jsonable(current)
        if changed_only and history.deleted:
            old[key] = "[redacted]" if redact else jsonable(history.deleted[0])
    return old, new


def _pending(target: Audited) -> list[tuple[str, str, str, Any, Any, str | None]]:
    session = object_session(target)
    assert session is not None
    return session.info.setdefault("audit_pending", [])


@event.listens_for(Audited, "after_insert", propagate=True)
def _after_insert(_mapper: Any, _connection: Any, target: Audited) -> None:
    _, new = _values(target, changed_only=False)
    _pending(target).append(("create", target.audit_entity, target.audit_key(), None, new, None))


@event.listens_for(Audited, "after_update", propagate=True)
def _after_update(_mapper: Any, _connection: Any, target: Audited) -> None:
    old, new = _values(target, changed_only=True)
    if new:
        _pending(target).append(("update", target.audit_entity, target.audit_key(), old, new, None))


@event.listens_for(Audited, "before_delete", propagate=True)
def _before_delete(_mapper: Any, _connection: Any, target: Audited) -> None:
    if not target.audit_deletable:
        raise PermissionError(
            f"{target.audit_entity} {target.audit_key()} is a GMP record and cannot be deleted"
        )
    _, old = _values(target, changed_only=False)
    _pending(target).append(("delete", target.audit_entity, target.audit_key(), old, None, None))


@event.listens_for(Session, "after_soft_rollback")
def _forget_pending(session: Session, _previous: Any) -> None:
    session.info.pop("audit_pending", None)
    session.info.pop("audit_queue", None)


@event.listens_for(Session, "after_transaction_end")
def _forget_queue(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the outermost transaction ended: nothing carries over
        session.info.pop("audit_queue", None)


@event.listens_for(Session, "after_flush")
def _audit_flush(session: Session, _context: Any) -> None:
    """Queue the events collected by the mapper hooks, for this transaction's commit."""
    pending = session.info.pop("audit_pending", [])
    _append(session, pending)


@event.listens_for(Session, "before_commit")
def _append_before_commit(session: Session) -> None:
    """The last work of a transaction: flush what is left, then extend the chain."""
    session.flush()
    append_queued(session)


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    bad_seq: int | None = None
    problem: str | None = None

    def message(self) -> str:
        if self.ok:
            return f"audit trail intact: {self.checked} events verified"
        return f"audit trail broken at event {self.bad_seq}: {self.problem}"


@dataclass(frozen=True)
class Anchor:
    """The chain's head at one moment, kept outside the system (logbook, e-mail, a printed
    record). The chain binds every earlier event to it, so a later check that the event
    still carries this hash proves nothing up to it was removed or changed, which the
    chain alone cannot show for its last events."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, text_: str) -> Anchor:
        seq, _, hash_ = text_.strip().partition(":")
        if not seq.isdigit() or not re.fullmatch(r"[0-9a-f]{64}", hash_.lower()):
            raise ValueError(f"an anchor is SEQ:HASH as `audit head` prints it, not {text_!r}")
        return cls(int(seq), hash_.lower())


def head(connection: Connection) -> Anchor | None:
    """The last event of the chain, or None while the trail is empty."""
    row = connection.execute(_head_query()).first()
    return Anchor(row[0], row[1]) if row else None


def check_anchor(connection: Connection, anchor: Anchor) -> str | None:
    """What is wrong with the trail as measured against an anchor, or None."""
    stored = connection.execute(
        text("SELECT hash FROM audit_event WHERE seq = :seq"), {"seq": anchor.seq}
    ).scalar()
    if stored is None:
        last = head(connection)
        return (f"event {anchor.seq} of anchor {anchor} is gone (the trail now ends at "
                f"{last.seq if last else 0}): events were removed")
    if stored != anchor.hash:
        return (f"event {anchor.seq} no longer has the hash of anchor {anchor}: "
                "the trail was rewritten")
    return None


def count_events(connection: Connection) -> int:
    return connection.execute(text("SELECT count(*) FROM audit_event")).scalar_one()


def verify_chain(
    connection: Connection, progress: Callable[[int], None] | None = None, batch: int = 10_000
) -> VerifyResult:
    """Recompute the chain in one streaming pass with flat memory.

    Rows come straight from the driver in batches (a server-side cursor on
    PostgreSQL) and each batch is checked with list operations, so the Python
    work per event is little more than the hash itself.
    """
    raw = connection.connection.dbapi_connection
    postgresql = connection.dialect.name == "postgresql"
    cursor = raw.cursor(name="gmp_audit_verify") if postgresql else raw.cursor()
    if postgresql:
        cursor.itersize = batch
    # The database concatenates link and record: one string per event to hash.
    cursor.execute("SELECT seq, hash, prev_hash || record FROM audit_event ORDER BY seq")
    try:
        return _walk_chain(cursor, batch, progress)
    finally:
        cursor.close()  # releases the server-side cursor even when we stop early


def _walk_chain(cursor: Any, batch: int, progress: Callable[[int], None] | None) -> VerifyResult:
    sha256 = hashlib.sha256
    last_hash, expected = GENESIS_HASH, 1
    while rows := cursor.fetchmany(batch):
        # Ordered by a unique seq: the batch is gap-free iff its ends are where they must be.
        if rows[0][0] != expected or rows[-1][0] != expected + len(rows) - 1:
            bad = next(i for i, row in enumerate(rows) if row[0] != expected + i)
            return VerifyResult(
                False,
                expected + bad - 1,
                min(rows[bad][0], expected + bad),
                "sequence gap or reorder",
            )
        batch_start_hash = last_hash
        for _, hash_, message in rows:
            if not message.startswith(last_hash) or sha256(message.encode()).hexdigest() != hash_:
                return _diagnose(rows, batch_start_hash)
            last_hash = hash_
        expected += len(rows)
        if progress is not None:
            progress(len(rows))
    return VerifyResult(True, expected - 1)


def _diagnose(rows: list[Any], last_hash: str) -> VerifyResult:
    """Name the first bad event of a batch (the slow path, taken once)."""
    for seq, hash_, message in rows:
        if not message.startswith(last_hash):
            return VerifyResult(False, seq - 1, seq, "previous-hash link broken")
        if hashlib.sha256(message.encode()).hexdigest() != hash_:
            return VerifyResult(False, seq - 1, seq, "hash does not match its content")
        last_hash = hash_
    raise AssertionError("diagnose called on a valid batch")
