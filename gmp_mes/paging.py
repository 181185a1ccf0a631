"""Paging for the lists that grow (SPEC §7b): audit trail, patients, batches, alerts,
the release queue. A page asks for one row more than it shows, so "next" is known
without a COUNT over the whole table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

T = TypeVar("T")

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class Page:
    """Page ``number`` (1-based) of ``size`` rows; ``has_next`` when more follow."""

    number: int
    size: int
    has_next: bool

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def has_previous(self) -> bool:
        return self.number > 1


def requested(args: Mapping[str, str], default_size: int = PAGE_SIZE) -> tuple[int, int]:
    """(page number, page size) from the query string; anything malformed is page 1."""
    def _int(name: str, default: int, upper: int) -> int:
        raw = str(args.get(name, "") or "").strip()
        if not raw.isdigit():
            return default
        return max(1, min(int(raw), upper))

    return _int("page", 1, 1_000_000), _int("size", default_size, MAX_PAGE_SIZE)


def cut(rows: Sequence[T], number: int, size: int) -> tuple[list[T], Page]:
    """``rows`` fetched with ``limit=size + 1``: the rows to show and the page."""
    return list(rows[:size]), Page(number, size, len(rows) > size)


# --- keyset paging of a trail (custody events, step records) --------------------------------

def keyset_page(session: Session, statement: Select[Any], key: InstrumentedAttribute[int], *,
                limit: int, before: int | None = None) -> tuple[list[Any], int | None]:
    """The ``limit`` rows of ``statement`` with the highest ``key`` below ``before`` (the
    newest when None), oldest first, and the cursor of the page before them (None: no
    more). An index on the filter and ``key`` makes a page cost the same at 20 rows or
    20,000 (issue 15); the cursor is the key of the oldest row shown."""
    if before is not None:
        statement = statement.where(key < before)
    rows = list(session.scalars(statement.order_by(key.desc()).limit(limit + 1)))
    older = getattr(rows[limit - 1], key.key) if len(rows) > limit else None
    return list(reversed(rows[:limit])), older


def cursor(args: Mapping[str, str], name: str) -> int | None:
    """A keyset cursor from the query string (``custody_before``, ``steps_before``);
    anything malformed is None (the newest page)."""
    raw = str(args.get(name, "") or "").strip()
    return int(raw) if raw.isdigit() and 0 < int(raw) < 2**62 else None
