"""identity.services.final_products: the bags other domains join to (the recall, SPEC §11):
final products only, each with its administration (time, site) or None."""

from __future__ import annotations

import pytest

from tests.conftest import sig
from tests.test_identity_fixtures import TREATMENT, World, world_fixture  # noqa: F401


@pytest.mark.requirement("Regulation (EC) 1394/2007 Art. 15")
def test_final_products_are_every_bag_with_its_administration(world: World, login) -> None:
    from datetime import timedelta

    from gmp_mes.clock import utcnow
    from identity import services

    patient = world.enrol()
    coi = patient["coi_id"]
    start = world.item(coi, kind="starting_material", status="in_process", batch_number="B-1")
    middle = world.item(coi, kind="intermediate", status="in_process", parents=(start,),
                        batch_number="B-1")
    given, kept = (world.item(coi, parents=(middle,), site=TREATMENT, batch_number="B-1",
                              expires_at=utcnow() + timedelta(days=9)) for _ in range(2))
    answer = login(world.clinician).post("/api/v1/administrations", json={
        "patient_payload": world.payload(patient["wristband_item_id"]),
        "product_payload": world.payload(given), "signature": sig("administered")})
    assert answer.status_code == 201, answer.get_json()
    with world.tx() as s:
        rows = {r.item_id: r for r in s.execute(services.final_products())}
    assert set(rows) == {given, kept}  # no wristband, starting material or intermediate
    assert rows[given].administered_at is not None
    assert rows[given].administered_site == TREATMENT and rows[given].status == "administered"
    assert rows[kept].administered_at is None and rows[kept].administered_site is None
    assert {r.batch_number for r in rows.values()} == {"B-1"}
    assert {r.coi_id for r in rows.values()} == {coi}
