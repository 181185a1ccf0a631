"""The executed batch record lists the shipments of the batch's items (SPEC §14: "all in
the custody trail and the batch record export"): the starting material's journey from
the apheresis site to the plant, with its condition and temperature log, in the JSON and
the PDF."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

import labels.services as labels
from batches import export
from tests.test_batches_export import pdf_text, squash
from tests.test_batches_fixtures import APHERESIS, PLANT, Plant, plant_fixture  # noqa: F401


@pytest.mark.requirement("EU GMP Part IV 6.5")
def test_the_export_carries_the_starting_materials_shipment(plant: Plant) -> None:
    from logistics import services

    item_id = plant.starting_material(received=False)
    assert plant.apheresis is not None
    with plant.tx(plant.apheresis) as s:
        shipment = services.create_shipment(
            s, items=[item_id], from_site=APHERESIS, to_site=PLANT, min_c=2.0, max_c=8.0,
            logger_id="TL-42", courier="World Courier",
            user=plant._user(s, plant.apheresis)).shipment_id
        start = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
        services.upload_log(s, shipment, readings=[
            {"at": (start + timedelta(minutes=5 * n)).isoformat(), "c": 4.5} for n in range(12)
        ], user=plant._user(s, plant.apheresis))
    with plant.tx(plant.operator) as s:
        payload = labels.payload_for_item(s, item_id)
        outcome = services.receive_shipment(s, shipment, site=PLANT, payloads=[payload],
                                            user=plant._user(s, plant.operator))
        assert outcome.received == [item_id] and outcome.hold is None
    number = plant.start(item_id)
    with plant.tx(plant.qa) as s:
        raw, _ = export.export_batch(s, number, "json")
        pdf, _ = export.export_batch(s, number, "pdf")
    data = json.loads(raw)
    [row] = data["logistics"]
    assert row["shipment_id"] == shipment and row["condition"] == {"min_c": 2.0, "max_c": 8.0}
    assert row["temperature_log"]["readings"] == 12 and row["hold"] is None
    assert any(e["action"] == "ship" and e["item_id"] == item_id for e in data["custody"])
    text = squash(pdf_text(pdf))
    assert "Shipments and their condition" in text and shipment in text
    assert "12 readings, 4.5 to 4.5 °C" in text


@pytest.mark.requirement("EU GDP 9.2")
def test_held_starting_material_starts_no_batch_until_qa_accepts(plant: Plant) -> None:
    """Apheresis material shipped with a logger arrives without its log: held
    (temperature_unknown); no batch starts from it until QA accepts the shipment."""
    from gmp_mes.errors import DomainError
    from gmp_mes.signatures import SignatureInput
    from logistics import services
    from tests.conftest import PASSWORD

    item_id = plant.starting_material(received=False)
    assert plant.apheresis is not None
    with plant.tx(plant.apheresis) as s:
        shipment = services.create_shipment(
            s, items=[item_id], from_site=APHERESIS, to_site=PLANT, min_c=2.0, max_c=8.0,
            logger_id="TL-43", user=plant._user(s, plant.apheresis)).shipment_id
    with plant.tx(plant.operator) as s:
        outcome = services.receive_shipment(
            s, shipment, site=PLANT, payloads=[labels.payload_for_item(s, item_id)],
            user=plant._user(s, plant.operator))
        assert outcome.hold == "temperature_unknown"
    with pytest.raises(DomainError) as refused:
        plant.start(item_id)
    assert refused.value.code == "temperature_unknown"
    with plant.tx(plant.qa) as s:
        services.decide_shipment(
            s, shipment, decision="accept", user=plant._user(s, plant.qa),
            justification="courier's logger record reviewed: 4-6 °C throughout",
            signature=SignatureInput(password=PASSWORD, meaning="approved"))
    assert plant.start(item_id)
