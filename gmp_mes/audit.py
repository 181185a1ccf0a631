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

Longer than 500 lines on purpose: the capture hooks, the chain append, its verification
and the clock guard share the canonical form and the lock; split, the rule that an event
is hashed exactly as it is verified would live in two places.

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
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, cast

from sqlalchemy import Connection, event, inspect, select, text
from sqlalchemy.orm import Session, object_session

from gmp_mes import registry
from gmp_mes.clock import utcnow
from gmp_mes.db import Base
from gmp_mes.errors import DomainError

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.engine.interfaces import DBAPIConnection, DBAPICursor

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
    last, last_at = _head_and_time(connection)
    seq, prev_hash = (last.seq, last.hash) if last else (0, GENESIS_HASH)
    at_text = _event_time(session, last, last_at, utcnow())
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
    return (
        select(table.c.seq, table.c.hash, table.c.occurred_at)
        .order_by(table.c.seq.desc())
        .limit(1)
    )


# Below this many events, COPY's extra round trips cost more than it saves.
COPY_THRESHOLD = 20


def _driver(connection: Connection) -> DBAPIConnection:
    """The driver's own connection under ``connection`` (same transaction)."""
    raw = connection.connection.dbapi_connection
    if raw is None:  # only once the pool has invalidated it
        raise RuntimeError("the database connection was invalidated")
    return raw


def _psycopg(connection: Connection) -> psycopg.Connection[Any]:
    """On PostgreSQL the driver is psycopg: COPY and server-side cursors are its own."""
    return cast("psycopg.Connection[Any]", _driver(connection))


def _insert_rows(connection: Connection, rows: list[tuple[int, str, str, str]]) -> None:
    """Straight to the driver: COPY for a PostgreSQL bulk append (thousands of events in
    one go); a plain INSERT otherwise, one round trip for the usual one or two events."""
    if connection.dialect.name == "postgresql" and len(rows) > COPY_THRESHOLD:
        cursor = _psycopg(connection).cursor()  # same transaction
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


# --- time stamps never go backwards (21 CFR 11.10(e): the trail's order is the order of
# its times; a clock stepped back would make later events look earlier) ----------------------

# Set in a session whose events must be written even though the clock is behind the
# chain's head (the alert that reports it): they carry the head's time instead.
CLOCK_CLAMP = "audit_clock_clamp"
# Nodes' clocks differ by a few milliseconds even when synchronised: an event that would
# be up to this much earlier than the head carries the head's time (the trail stays in
# order); a larger step back is a clock that went backwards, and is refused.
CLOCK_SKEW_TOLERANCE = timedelta(seconds=1)


class ClockWentBackwards(DomainError):
    """The system clock reads earlier than the newest audit event: the write is refused
    (nothing is written with a time stamp out of order) and an alert is raised."""

    status, code, title = 503, "clock_went_backwards", "System clock went backwards"


def _head_and_time(connection: Connection) -> tuple[Anchor | None, str | None]:
    """The chain's head and its time stamp (as written), read in one query."""
    row = connection.execute(_head_query()).first()
    return (Anchor(row[0], row[1]), row[2]) if row else (None, None)


def _event_time(
    session: Session, last: Anchor | None, last_at: str | None, now: datetime
) -> str:
    """The time stamp of the next events: ``now``, never earlier than the chain's head."""
    now_text = format_time(now)
    if last is None or last_at is None or now_text >= last_at:
        return now_text
    if session.info.get(CLOCK_CLAMP) or now >= _parse_time(last_at) - CLOCK_SKEW_TOLERANCE:
        return last_at
    raise ClockWentBackwards(
        f"the system clock reads {now_text}, earlier than the last audit event "
        f"({last.seq} at {last_at}): nothing is recorded until the clock is corrected",
        extra={"clock": now_text, "last_event_at": last_at},
        follow_up=_clock_alert(last.seq, last_at, now_text),
    )


def _parse_time(text_: str) -> datetime:
    return datetime.strptime(text_, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _clock_alert(seq: int, last_at: str, now_text: str) -> Callable[[Session], None]:
    def follow_up(session: Session) -> None:
        session.info[CLOCK_CLAMP] = True
        for raise_alert in registry.clock_went_backwards.providers():
            raise_alert(session, seq, last_at, now_text)

    return follow_up


def snapshot(obj: Audited) -> dict[str, Any]:
    """A loaded, unchanged record's values as its audit events record them."""
    return _values(obj, changed_only=False)[1]


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
    # Events whose time stamp is earlier than their predecessor's: (seq, at, previous at),
    # the first MAX_BACKWARD of them, and how many there are in all.
    backward: list[tuple[int, str, str]] = field(default_factory=list)
    backward_count: int = 0

    def message(self) -> str:
        if self.ok:
            return f"audit trail intact: {self.checked} events verified"
        return f"audit trail broken at event {self.bad_seq}: {self.problem}"

    def backward_lines(self) -> list[str]:
        lines = [f"event {seq} is time-stamped {at}, earlier than the event before it ({prev})"
                 for seq, at, prev in self.backward]
        if self.backward_count > len(self.backward):
            lines.append(f"... {self.backward_count} events in all go back in time")
        return lines


MAX_BACKWARD = 20


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
    connection: Connection,
    progress: Callable[[int], None] | None = None,
    batch: int = 10_000,
    *,
    after: Anchor | None = None,
) -> VerifyResult:
    """Recompute the chain in one streaming pass with flat memory.

    Rows come straight from the driver in batches (a server-side cursor on
    PostgreSQL) and each batch is checked with list operations, so the Python
    work per event is little more than the hash itself. With ``after`` (a trusted
    point of the chain: a signed checkpoint) only the events after it are read,
    linked to its hash. Every event's time stamp is also compared with its
    predecessor's: a step back is reported, the chain itself may still be intact.
    """
    postgresql = connection.dialect.name == "postgresql"
    cursor: psycopg.ServerCursor[Any] | DBAPICursor
    if postgresql:
        cursor = _psycopg(connection).cursor(name="gmp_audit_verify")
        cursor.itersize = batch
    else:
        cursor = _driver(connection).cursor()
    start = after or Anchor(0, GENESIS_HASH)
    start_at = ""
    if after is not None:
        start_at = connection.execute(
            text("SELECT occurred_at FROM audit_event WHERE seq = :s"), {"s": after.seq}
        ).scalar() or ""
    marker = "%s" if postgresql else "?"
    # The database concatenates link and record: one string per event to hash.
    cursor.execute(
        "SELECT seq, hash, prev_hash || record, occurred_at FROM audit_event "
        f"WHERE seq > {marker} ORDER BY seq",
        (start.seq,),
    )
    try:
        return _walk_chain(cursor, batch, progress, start, start_at)
    finally:
        cursor.close()  # releases the server-side cursor even when we stop early


def _walk_chain(
    cursor: Any, batch: int, progress: Callable[[int], None] | None, start: Anchor,
    start_at: str,
) -> VerifyResult:
    sha256 = hashlib.sha256
    last_hash, expected, last_at = start.hash, start.seq + 1, start_at
    backward: list[tuple[int, str, str]] = []
    backward_count = 0
    while rows := cursor.fetchmany(batch):
        # Ordered by a unique seq: the batch is gap-free iff its ends are where they must be.
        if rows[0][0] != expected or rows[-1][0] != expected + len(rows) - 1:
            bad = next(i for i, row in enumerate(rows) if row[0] != expected + i)
            return VerifyResult(
                False,
                expected + bad - 1 - start.seq,
                min(rows[bad][0], expected + bad),
                "sequence gap or reorder",
                backward,
                backward_count,
            )
        batch_start_hash = last_hash
        for seq, hash_, message, at in rows:
            if not message.startswith(last_hash) or sha256(message.encode()).hexdigest() != hash_:
                result = _diagnose(rows, batch_start_hash)
                result.checked -= start.seq
                result.backward, result.backward_count = backward, backward_count
                return result
            if at < last_at:
                backward_count += 1
                if len(backward) < MAX_BACKWARD:
                    backward.append((seq, at, last_at))
            last_hash, last_at = hash_, at
        expected += len(rows)
        if progress is not None:
            progress(len(rows))
    return VerifyResult(True, expected - 1 - start.seq, None, None, backward, backward_count)


def _diagnose(rows: list[Any], last_hash: str) -> VerifyResult:
    """Name the first bad event of a batch (the slow path, taken once)."""
    for seq, hash_, message, _at in rows:
        if not message.startswith(last_hash):
            return VerifyResult(False, seq - 1, seq, "previous-hash link broken")
        if hashlib.sha256(message.encode()).hexdigest() != hash_:
            return VerifyResult(False, seq - 1, seq, "hash does not match its content")
        last_hash = hash_
    raise AssertionError("diagnose called on a valid batch")
