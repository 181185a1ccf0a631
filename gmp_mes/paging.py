"""Paging for the lists that grow (SPEC §7b): audit trail, patients, batches, alerts,
the release queue. A page asks for one row more than it shows, so "next" is known
without a COUNT over the whole table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

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
