"""The status computed from the logbook (SPEC §11): Hypothesis over random event sequences
against a model written here, and the database read folding the same answer."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from equipment import services
from equipment.models import EquipmentStatus
from gmp_mes.clock import clock
from tests.test_equipment_fixtures import Shop, shop_fixture  # noqa: F401

pytestmark = pytest.mark.requirement("21 CFR 211.68")

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_ids = itertools.count(1)
KINDS = ("calibrated", "maintained", "cleaned", "out_of_service", "returned_to_service")


@dataclass(frozen=True)
class Event:
    kind: str
    recorded_at: datetime
    reason: str | None = None
    valid_until: datetime | None = None


events = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 400)), max_size=25)


def _sequence(drawn: list[tuple[str, int]]) -> list[Event]:
    """Events one hour apart; a calibration holds for the drawn number of days."""
    out = []
    for index, (kind, days) in enumerate(drawn):
        at = T0 + timedelta(hours=index)
        out.append(Event(kind, at, reason="r" if kind == "out_of_service" else None,
                         valid_until=at + timedelta(days=days) if kind == "calibrated"
                         else None))
    return out


def _model(sequence: list[Event], interval: str | None, at: datetime) -> str:
    """The rule as SPEC §11 states it, replayed event by event."""
    out_of_service, valid_until, calibrated = False, None, False
    for event in sequence:
        if event.kind == "out_of_service":
            out_of_service = True
        elif event.kind == "returned_to_service":
            out_of_service = False
        elif event.kind == "calibrated":
            calibrated, valid_until = True, event.valid_until
    if out_of_service:
        return "out_of_service"
    if (interval is not None or calibrated) and (valid_until is None or valid_until <= at):
        return "calibration_overdue"
    return "in_service"


@settings(max_examples=300, deadline=None)
@given(drawn=events, interval=st.sampled_from([None, "P30D"]), hours_later=st.integers(0, 24 * 500))
def test_status_of_the_folded_logbook_matches_the_rule(drawn, interval, hours_later) -> None:
    sequence = _sequence(drawn)
    at = T0 + timedelta(hours=len(sequence) + hours_later)
    standing = services.fold(sequence)
    assert services.status_of(standing, interval, at).value == _model(sequence, interval, at)
    reasons = [r["code"] for r in services.unfit_reasons("X", standing, interval, at)]
    # Every reason, not only the status that wins.
    assert ("equipment_out_of_service" in reasons) == standing.out_of_service
    assert ("calibration_overdue" in reasons) == services.calibration_overdue(
        standing, interval, at)


@given(drawn=events)
def test_folding_only_the_latest_event_of_each_group_gives_the_same_standing(drawn) -> None:
    """What services.standings relies on: it reads the latest event of each group only."""
    sequence = _sequence(drawn)
    group = {"out_of_service": "service", "returned_to_service": "service"}
    latest: dict[str, int] = {}
    for index, event in enumerate(sequence):
        latest[group.get(event.kind, event.kind)] = index
    assert services.fold(sequence[i] for i in sorted(latest.values())) == services.fold(sequence)


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=st.lists(st.sampled_from(KINDS), min_size=1, max_size=6))
def test_the_database_read_agrees_with_the_fold(shop: Shop, drawn) -> None:
    """Through the services on both databases: refused transitions are skipped, as the
    service refuses them; the status read back equals the model's."""
    equipment_id = f"HYP-{next(_ids)}"  # one new piece of equipment per example
    shop.register(equipment_id, "incubator", interval="P30D")
    recorded: list[Event] = []
    out = False
    for kind in drawn:
        if (kind == "out_of_service" and out) or (kind == "returned_to_service" and not out):
            continue
        clock.advance(timedelta(days=1))
        shop.event(equipment_id, kind, reason="r" if kind == "out_of_service" else None)
        out = {"out_of_service": True, "returned_to_service": False}.get(kind, out)
        recorded.append(Event(kind, clock.now(), valid_until=clock.now() + timedelta(days=30)
                              if kind == "calibrated" else None))
    view = shop.view(equipment_id)
    assert view.status == _model(recorded, "P30D", clock.now())
    assert EquipmentStatus(view.status)
