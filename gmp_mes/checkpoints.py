"""Signed checkpoints of the audit chain: the installation key anchors the trail.

The hash chain proves that no event was changed *unless the whole chain after it
was recomputed*: anyone who can drop the triggers can rewrite an event and
re-hash everything after it. A checkpoint is the chain's head at one moment
(event ``seq`` and its ``hash``, with the time), signed with Ed25519 by the
installation key, which the database does not hold. ``audit verify`` checks every
checkpoint's signature and that the chain still passes through it, so a rewritten
and re-chained trail fails without the key (21 CFR 11.10(e), EU GMP Annex 11 §9).

Each checkpoint also signs the digest of its predecessor's signature and carries a
contiguous number, so a removed checkpoint breaks the checkpoint chain. Before signing,
the events since the previous checkpoint are verified: a checkpoint never signs a broken
chain, and a forger without the key can reach only the events of the current interval. The
scheduler writes one every ``checkpoint_minutes`` when the trail grew;
``gmp-mes audit checkpoint`` writes one now.

Checkpoints describe the trail and are not GMP records themselves: writing one
writes no audit event (it would move the head it just signed). The table is
append-only (database triggers).

The core does not know where the key lives: the domain that owns the installation
key (labels) registers an :class:`InstallationKey` at ``init_app``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flask import Flask
from sqlalchemy import Integer, String, insert, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, Session, mapped_column

from gmp_mes import alerts, audit
from gmp_mes.audit import GENESIS_HASH, Anchor, format_time
from gmp_mes.clock import utcnow
from gmp_mes.db import Base
from gmp_mes.errors import conflict

# Arbitrary constant: the checkpoint writers' advisory lock on PostgreSQL.
CHECKPOINT_LOCK_KEY = 7_470_003
EXTENSION = "gmp_mes.installation_key"


class AuditCheckpoint(Base):
    __tablename__ = "audit_checkpoint"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[str] = mapped_column(String(32))  # format_time text, as signed
    prev: Mapped[str] = mapped_column(String(64))  # sha256 of the previous signature
    key_id: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(128))  # hex, 64 bytes


@dataclass(frozen=True)
class InstallationKey:
    """How the core reaches the installation key without knowing where it lives."""

    sign: Callable[[bytes], tuple[str, bytes]]  # message -> (key id, signature)
    public_keys: Callable[[], dict[str, Ed25519PublicKey]]  # key id -> key (retired too)


def register_installation_key(app: Flask, key: InstallationKey) -> None:
    app.extensions[EXTENSION] = key


def installation_key(app: Flask) -> InstallationKey | None:
    return app.extensions.get(EXTENSION)


@dataclass(frozen=True)
class Checkpoint:
    number: int
    seq: int
    hash: str
    created_at: str
    prev: str
    key_id: str
    signature: str

    @property
    def anchor(self) -> Anchor:
        return Anchor(self.seq, self.hash)

    def message(self) -> bytes:
        return signed_message(self.number, self.seq, self.hash, self.created_at, self.prev)

    def __str__(self) -> str:
        return (f"checkpoint {self.number}: event {self.seq} ({self.hash[:16]}...) at "
                f"{self.created_at}, key {self.key_id}")


def signed_message(number: int, seq: int, hash_: str, created_at: str, prev: str) -> bytes:
    return f"gmp-mes audit checkpoint v1|{number}|{seq}|{hash_}|{created_at}|{prev}".encode()


def _prev_digest(signature_hex: str | None) -> str:
    if signature_hex is None:
        return GENESIS_HASH
    return hashlib.sha256(bytes.fromhex(signature_hex)).hexdigest()


_COLUMNS = "number, seq, hash, created_at, prev, key_id, signature"


def latest(connection: Connection) -> Checkpoint | None:
    row = connection.execute(
        text(f"SELECT {_COLUMNS} FROM audit_checkpoint ORDER BY number DESC LIMIT 1")
    ).first()
    # The columns selected, typed (mypy unpacks a Row as object).
    return Checkpoint(*cast("tuple[Any, ...]", row)) if row else None


def write_checkpoint(session: Session, key: InstallationKey) -> Checkpoint | None:
    """Sign the chain's current head; None when the trail is empty or the newest
    checkpoint already covers the head. Flushes, never commits."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHECKPOINT_LOCK_KEY}
        )
    last_event = audit.head(connection)
    if last_event is None:
        return None
    previous = latest(connection)
    if previous is not None and previous.seq == last_event.seq:
        return None
    _refuse_broken_segment(connection, previous)
    number = previous.number + 1 if previous else 1
    created_at = format_time(utcnow())
    prev = _prev_digest(previous.signature if previous else None)
    key_id, signature = key.sign(
        signed_message(number, last_event.seq, last_event.hash, created_at, prev)
    )
    checkpoint = Checkpoint(number, last_event.seq, last_event.hash, created_at, prev, key_id,
                            signature.hex())
    connection.execute(insert(AuditCheckpoint).values(
        number=checkpoint.number, seq=checkpoint.seq, hash=checkpoint.hash,
        created_at=checkpoint.created_at, prev=checkpoint.prev, key_id=checkpoint.key_id,
        signature=checkpoint.signature,
    ))
    return checkpoint


def _refuse_broken_segment(connection: Connection, previous: Checkpoint | None) -> None:
    """Never sign a broken chain: the events since the previous checkpoint are verified
    first (an interval's worth), linked to its signed hash. So the events between two
    checkpoints were checked when the second was signed, and a forger without the key
    can only ever reach the events of the current interval."""
    problem = None
    if previous is not None:
        stored = connection.execute(
            text("SELECT hash FROM audit_event WHERE seq = :s"), {"s": previous.seq}
        ).scalar()
        problem = _link_problem(previous, stored)
    if problem is None:
        result = audit.verify_chain(connection, after=previous.anchor if previous else None)
        problem = None if result.ok else result.message()
    if problem is None:
        return
    detail = f"no checkpoint signed: {problem}"

    def follow_up(session: Session) -> None:
        session.info[audit.CLOCK_CLAMP] = True  # the alert must be kept whatever the clock
        alerts.raise_alert(session, alerts.AlertSpec(
            cause=f"audit_trail_broken:{previous.number if previous else 0}",
            kind="audit_trail_broken", severity=alerts.Severity.CRITICAL.value,
            subject_type="system", subject_id="audit_trail", roles=("admin", "qa"),
            message=f"the audit trail failed its check before a checkpoint: {problem}",
        ))

    raise conflict("audit_trail_broken", detail, follow_up=follow_up)


def _signature_problem(checkpoint: Checkpoint, keys: dict[str, Ed25519PublicKey]) -> str | None:
    public = keys.get(checkpoint.key_id)
    if public is None:
        return f"checkpoint {checkpoint.number} is signed by unknown key {checkpoint.key_id}"
    try:
        public.verify(bytes.fromhex(checkpoint.signature), checkpoint.message())
    except (InvalidSignature, ValueError):
        return (f"checkpoint {checkpoint.number} (event {checkpoint.seq}): the signature "
                "does not match: the checkpoint was forged or altered")
    return None


def _link_problem(checkpoint: Checkpoint, event_hash: str | None) -> str | None:
    if event_hash is None:
        return (f"event {checkpoint.seq} of signed checkpoint {checkpoint.number} is gone: "
                "events were removed")
    if event_hash != checkpoint.hash:
        return (f"event {checkpoint.seq} no longer has the hash signed in checkpoint "
                f"{checkpoint.number}: the trail was rewritten and re-chained")
    return None


@dataclass
class CheckpointReport:
    checked: int
    problems: list[str]
    last: Checkpoint | None


def check_all(connection: Connection, keys: dict[str, Ed25519PublicKey]) -> CheckpointReport:
    """Every checkpoint: contiguous numbers, each linked to its predecessor, each signature
    valid, and each still on the chain (its event carries the signed hash). One query."""
    rows = connection.execute(text(
        "SELECT c.number, c.seq, c.hash, c.created_at, c.prev, c.key_id, c.signature, e.hash "
        "FROM audit_checkpoint c LEFT JOIN audit_event e ON e.seq = c.seq ORDER BY c.number"
    ))
    problems: list[str] = []
    previous: Checkpoint | None = None
    count = 0
    for row in rows:
        checkpoint = Checkpoint(*row[:7])
        count += 1
        problems.extend(_one(checkpoint, row[7], previous, keys))
        previous = checkpoint
    return CheckpointReport(count, problems, previous)


def check_latest(connection: Connection, keys: dict[str, Ed25519PublicKey]) -> CheckpointReport:
    """The newest checkpoint only (``audit verify --since-checkpoint``): its signature,
    its link to the checkpoint before it, and that the chain still passes through it."""
    rows = connection.execute(text(
        "SELECT c.number, c.seq, c.hash, c.created_at, c.prev, c.key_id, c.signature, e.hash "
        "FROM audit_checkpoint c LEFT JOIN audit_event e ON e.seq = c.seq "
        "ORDER BY c.number DESC LIMIT 2"
    )).all()
    if not rows:
        return CheckpointReport(0, [], None)
    last = Checkpoint(*rows[0][:7])
    before = Checkpoint(*rows[1][:7]) if len(rows) > 1 else None
    problems = _one(last, rows[0][7], before, keys)
    if before is None and last.number != 1:
        problems.append(f"checkpoint {last.number} is the only one left: checkpoints "
                        f"1 to {last.number - 1} were removed")
    return CheckpointReport(1, problems, last)


def _one(
    checkpoint: Checkpoint, event_hash: str | None, previous: Checkpoint | None,
    keys: dict[str, Ed25519PublicKey],
) -> list[str]:
    problems = []
    expected_number = previous.number + 1 if previous else 1
    if checkpoint.number != expected_number:
        problems.append(f"checkpoint {expected_number} is missing (found {checkpoint.number} "
                        "next): a signed checkpoint was removed")
    elif checkpoint.prev != _prev_digest(previous.signature if previous else None):
        problems.append(f"checkpoint {checkpoint.number} is not linked to checkpoint "
                        f"{expected_number - 1}")
    if previous is not None and checkpoint.seq < previous.seq:
        problems.append(f"checkpoint {checkpoint.number} is at an earlier event than "
                        f"checkpoint {previous.number}")
    for problem in (_signature_problem(checkpoint, keys), _link_problem(checkpoint, event_hash)):
        if problem:
            problems.append(problem)
    return problems


def staleness(connection: Connection, last: Checkpoint | None, interval: timedelta) -> str | None:
    """A warning when events after the newest checkpoint are older than two intervals:
    those events are anchored by nothing but the chain (the scheduler may be down, or
    the newest checkpoints were removed)."""
    head = audit.head(connection)
    if head is None or (last is not None and last.seq >= head.seq):
        return None
    after = last.seq if last else 0
    first_at = connection.execute(
        text("SELECT occurred_at FROM audit_event WHERE seq = :s"), {"s": after + 1}
    ).scalar()
    if first_at is None or first_at > format_time(utcnow() - 2 * interval):
        return None
    where = f"checkpoint {last.number}" if last else "any signed checkpoint"
    return (f"warning: {head.seq - after} event(s) since {first_at} are not yet covered by "
            f"{where} (expected every {interval}): check that the scheduler runs and that "
            "no checkpoint was removed")


def due(connection: Connection, interval: timedelta, now: datetime) -> bool:
    last = latest(connection)
    if last is None:
        return True
    return last.created_at <= format_time(now - interval)


def job(app: Flask) -> list[str]:
    """Scheduler job: a signed checkpoint every ``checkpoint_minutes`` while the trail grows."""
    key = installation_key(app)
    if key is None:
        return []
    interval = timedelta(minutes=app.config["GMP_SETTINGS"].checkpoint_minutes)
    db = app.extensions["gmp_mes.db"]
    with db.transaction(actor=audit.Actor.system("checkpoint")) as session:
        if not due(session.connection(), interval, utcnow()):
            return []
        checkpoint = write_checkpoint(session, key)
    return [f"audit {checkpoint}"] if checkpoint else []


def public_keys(app: Flask) -> dict[str, Any]:
    key = installation_key(app)
    return key.public_keys() if key else {}
