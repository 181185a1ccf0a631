"""Small helpers shared by tests (import from tests.helpers)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from gmp_mes.db import Database


def audit_events(db: Database, **filters: Any) -> list[dict[str, Any]]:
    where = " AND ".join(f"{k} = :{k}" for k in filters) or "1=1"
    with db.engine.connect() as c:
        rows = c.execute(text(f"SELECT * FROM audit_event WHERE {where} ORDER BY seq"), filters)
        return [dict(r._mapping) for r in rows]


def count(db: Database, table: str) -> int:
    with db.engine.connect() as c:
        return c.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def assert_problem(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.content_type.startswith("application/problem+json"), response.content_type
    body = response.get_json()
    for key in ("type", "title", "status", "detail", "code"):
        assert key in body, (key, body)
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body
    return body


def failing(attempt: Callable[[], Any], times: int, status: int = 401) -> list[Any]:
    """Make ``times`` failed password attempts that count, as a patient attacker would:
    when the failed-password rate limit answers 429, wait out its Retry-After on the
    (frozen) test clock and try again. Returns the answers of the counted attempts."""
    from datetime import timedelta

    from gmp_mes.clock import clock, utcnow

    clock.freeze(utcnow())
    answers = []
    while len(answers) < times:
        response = attempt()
        if response.status_code == 429:
            clock.advance(timedelta(seconds=int(response.headers["Retry-After"]) + 1))
            continue
        assert response.status_code == status, (response.status_code, response.get_data())
        answers.append(response)
    return answers
def trail_time(db: Database) -> datetime:
    """The newest audit event's time stamp (a frozen test clock must not go before it)."""
    with db.engine.connect() as c:
        at = c.execute(text("SELECT occurred_at FROM audit_event ORDER BY seq DESC LIMIT 1"))
        value = at.scalar()
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) if value \
        else datetime.min.replace(tzinfo=UTC)
