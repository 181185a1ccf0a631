"""`gmp-mes audit verify` as one function: everything that says whether the trail and the
records can be trusted (21 CFR 11.10(e), EU GMP Annex 11 §9).

- the hash chain, recomputed (every event, or only those after the last signed checkpoint);
- the signed checkpoints: signature, link to the previous one, still on the chain;
- time order: no event earlier than the one before it;
- anchors kept outside the system (``audit head``);
- every audited record against its last audited values (since a checkpoint: the records
  with events after it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from gmp_mes import audit, checkpoints, reconcile
from gmp_mes.db import Database


class NoCheckpoint(Exception):
    """``since_checkpoint`` asked for, but no checkpoint was ever signed."""


@dataclass
class TrailReport:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_trail(
    db: Database,
    keys: dict[str, Any],
    *,
    anchors: Sequence[audit.Anchor] = (),
    since_checkpoint: bool = False,
    checkpoint_interval: timedelta = timedelta(hours=1),
    progress: Callable[[int], None] | None = None,
    reconcile_records: bool = True,
) -> TrailReport:
    out = TrailReport()
    result: audit.VerifyResult | None
    with db.engine.connect() as connection:
        if since_checkpoint:
            checked = checkpoints.check_latest(connection, keys)
            if checked.last is None:
                raise NoCheckpoint("no signed checkpoint yet: run a full `audit verify`")
            # A checkpoint that fails is no trusted starting point: nothing after it is read.
            result = (None if checked.problems
                      else audit.verify_chain(connection, after=checked.last.anchor))
            scope = f" since {checked.last}"
        else:
            result = audit.verify_chain(connection, progress=progress)
            checked = checkpoints.check_all(connection, keys)
            scope = ""
        if result is not None and not result.ok:
            out.problems.append(result.message())
        out.problems.extend(checked.problems)
        out.problems.extend(p for a in anchors if (p := audit.check_anchor(connection, a)))
        if result is not None:
            out.problems.extend(result.backward_lines())
        stale = checkpoints.staleness(connection, checked.last, checkpoint_interval)
        if stale:
            out.warnings.append(stale)
    if result is not None and result.ok:
        out.summary.append(
            result.message() + scope
            + (f"; {checked.checked} signed checkpoint(s) valid" if checked.checked
               else "; no signed checkpoint yet")
            + (f"; {len(anchors)} anchor(s) still match" if anchors and out.ok else "")
        )
    if reconcile_records and (not since_checkpoint or result is not None):
        after = checked.last.seq if since_checkpoint and checked.last else None
        found = differences(db, after)
        which = "every audited record" if after is None else "every record changed since"
        out.problems.extend(f"record differs from its audit trail: {d}" for d in found)
        out.summary.append(f"records: {which} matches its last audited values"
                           if not found else f"records: {len(found)} difference(s)")
    return out


def differences(db: Database, after_seq: int | None = None) -> list[reconcile.Difference]:
    """Every record (or those with events after ``after_seq``) against its trail, read in
    one snapshot (on PostgreSQL each statement would otherwise see the commits made
    between them, and report false differences)."""
    connection = db.engine.connect()
    if db.dialect == "postgresql":
        connection = connection.execution_options(isolation_level="REPEATABLE READ")
    with connection, Session(bind=connection) as session:
        if after_seq is None:
            return list(reconcile.differences(session))
        return list(reconcile.differences_since(session, after_seq))
