"""Growth without slowdown (issue 15): a batch with 1,000 step records.

Recording the next step costs the same number of SQL statements at 10 or 1,000 earlier
records, the batch page and GET /batches/{n} answer one page of the step history
(with a cursor to the older ones), and the exports stay complete. No timing here:
bench/bench_steps.py measures the time (figure ``steps``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event, select

from batches import pages, services
from batches.models import StepRecord
from gmp_mes.errors import InvalidTransition
from tests.test_batches_fixtures import Plant, good_values, plant_fixture  # noqa: F401
from tests.test_identity_pages import Browser


def _batch_with_expansion_days(plant: Plant, days: int) -> str:
    """A batch through transduction, one signed expansion record, then ``days - 1``
    more expansion records inserted directly (a factory: the same columns the service
    writes, one signature reused) so the test stays fast."""
    number = plant.start()
    plant.run_to(number, "expansion", expansion_days=1)
    step = plant.definition(number).step("expansion")
    values = good_values(step)
    with plant.tx() as s:
        batch = services.get_batch(s, number)
        first = s.scalar(select(StepRecord).where(StepRecord.batch_id == batch.id,
                                                  StepRecord.step_code == "expansion"))
        assert first is not None
        rows = [{
            "batch_id": batch.id, "batch_number": number, "step_code": "expansion",
            "step_index": step.index, "occurrence": n, "version": 1,
            "values_json": json.dumps(values), "results_json": first.results_json,
            "in_limits": True, "performed_at": first.performed_at,
            "recorded_by": first.recorded_by, "signature_id": first.signature_id,
        } for n in range(2, days + 1)]
        if rows:
            s.execute(StepRecord.__table__.insert(), rows)
    return number


@contextmanager
def _statements(plant: Plant) -> Iterator[list[str]]:
    """Every SQL statement sent while the block runs."""
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    event.listen(plant.db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(plant.db.engine, "before_cursor_execute", count)


@contextmanager
def _loaded_records() -> Iterator[list[int]]:
    """The ids of the step records the ORM loads from rows while the block runs (one
    statement can still read every record: statements alone do not show that)."""
    loaded: list[int] = []

    def on_load(target, context) -> None:
        loaded.append(target.id)

    event.listen(StepRecord, "load", on_load)
    try:
        yield loaded
    finally:
        event.remove(StepRecord, "load", on_load)


def _record_expansion(plant: Plant, number: str) -> tuple[list[str], list[int]]:
    with _statements(plant) as seen, _loaded_records() as loaded:
        outcome = plant.record(number, "expansion")
    assert outcome.record.step_code == "expansion"
    return seen, loaded


def test_recording_a_step_costs_the_same_statements_at_10_and_1000_records(
        plant: Plant) -> None:
    small = _batch_with_expansion_days(plant, 10)
    large = _batch_with_expansion_days(plant, 1000)
    _record_expansion(plant, small)  # warm caches (definition, prepared lookups)
    at_10, loaded_10 = _record_expansion(plant, small)
    at_1000, loaded_1000 = _record_expansion(plant, large)
    assert len(at_1000) == len(at_10), "\n".join(at_1000)
    assert loaded_10 == loaded_1000 == []  # indexed reads of single values, no records
    with plant.tx() as s:
        batch = services.get_batch(s, large)
        assert services.steps.last_occurrence(s, batch, "expansion") == 1001
        assert [st.code for st in services.next_steps(s, batch)] == ["expansion", "harvest"]
    # The order rules still hold at 1,001 records: harvest ends the repeats.
    plant.record(large, "harvest")
    with pytest.raises(InvalidTransition, match="out of order"):
        plant.record(large, "expansion")


def test_correcting_a_step_costs_the_same_statements_at_10_and_1000_records(
        plant: Plant) -> None:
    from tests.test_batches_fixtures import sign

    small = _batch_with_expansion_days(plant, 10)
    large = _batch_with_expansion_days(plant, 1000)

    def correct(number: str) -> tuple[list[str], list[int]]:
        values = good_values(plant.definition(number).step("expansion"))
        with _statements(plant) as seen, _loaded_records() as loaded, plant.tx() as s:
            outcome = services.correct_step(
                s, number, "expansion", values=values, reason="typo",
                user_id=plant.operator.user_id, signature=sign())
        assert outcome.record.version == 2
        return seen, loaded

    at_10, loaded_10 = correct(small)
    at_1000, loaded_1000 = correct(large)
    assert len(at_1000) == len(at_10), "\n".join(at_1000)
    assert len(loaded_10) == len(loaded_1000) == 1  # only the record corrected
    with plant.tx() as s:
        [latest] = [r for r in services.current_records(s, services.get_batch(s, large))
                    if r.step_code == "expansion" and r.occurrence == 1000]
        assert latest.version == 2 and latest.correction_reason == "typo"


def test_batch_page_and_api_page_the_step_history_of_1000_records(
        plant: Plant, client, login) -> None:
    from tests.test_batches_fixtures import sign

    number = _batch_with_expansion_days(plant, 1000)
    with plant.tx() as s:  # day 1 corrected: its new version is the newest record
        services.correct_step(
            s, number, "expansion", occurrence=1, reason="typo", user_id=plant.operator.user_id,
            values=good_values(plant.definition(number).step("expansion")), signature=sign())
    total = 4 + 1000 + 1  # receipt ... transduction, expansion days, the correction
    browser = Browser(client, plant.operator)
    response = browser.get(f"/batches/{number}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert html.count('<div class="step-record') == pages.STEPS_PAGE
    assert len(response.get_data()) < 400_000  # 2.7 MB before paging
    older = re.search(r'href="(/batches/[^"]+steps_before=(\d+))#steps"', html)
    assert older and "Older records" in html
    assert "Record #1000," in html and "Record #1, version 2" in html
    assert "Record #2," not in html
    previous = browser.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert previous.count('<div class="step-record') == pages.STEPS_PAGE
    assert "Newest records" in previous and "Record #1000," not in previous
    # The form for the next expansion day is on every page: the order rules hold for the
    # whole batch, not the page.
    assert f"/batches/{number}/steps/expansion" in previous

    api = login(plant.operator)
    seen: list[int] = []
    cursor = None
    while True:
        url = f"/api/v1/batches/{number}?steps_limit=300"
        body = api.get(url + (f"&steps_before={cursor}" if cursor else "")).get_json()
        records = [r for step in body["steps"] for r in step["records"] + step["superseded"]]
        assert len(records) <= 300
        assert body["next_steps"] == ["expansion", "harvest"]
        assert [s["done"] for s in body["steps"]][:5] == [True] * 5
        seen += [r["id"] for r in records]
        cursor = body["steps_older"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == total
    # The oldest page shows day 1's first version, marked as superseded.
    last = browser.get(f"/batches/{number}?steps_before={min(seen) + 30}").get_data(
        as_text=True)
    assert "Record #1, version 1</strong> (superseded: the correction is on a newer page)" \
        in last
    default = api.get(f"/api/v1/batches/{number}")
    assert sum(len(s["records"]) for s in default.get_json()["steps"]) == 500
    assert default.get_json()["steps_older"] is not None


def test_exports_stay_complete_and_their_statements_do_not_grow(plant: Plant) -> None:
    from batches import export

    small = _batch_with_expansion_days(plant, 10)
    large = _batch_with_expansion_days(plant, 1000)

    def exported(number: str) -> tuple[dict, list[str]]:
        with _statements(plant) as seen, plant.tx() as s:
            data, _ = export.export_batch(s, number, "json")
        return json.loads(data), seen

    exported(small)  # warm caches
    data_10, at_10 = exported(small)
    assert len(next(s for s in data_10["steps"] if s["code"] == "expansion")["records"]) == 10
    data_1000, at_1000 = exported(large)
    days = [r for s in data_1000["steps"] if s["code"] == "expansion" for r in s["records"]]
    assert [r["occurrence"] for r in days] == list(range(1, 1001))
    assert data_1000["steps_older"] is None and len(data_1000["expansion_curve"]) == 1000
    # Every record is read in a fixed number of statements (no query per record).
    assert len(at_1000) == len(at_10), "\n".join(at_1000)
