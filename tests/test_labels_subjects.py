"""labels prints the subject it is given (issue 16): identity answers the
``gmp_mes.registry.label_subjects`` seam, labels never imports identity."""

from __future__ import annotations

import pytest

from gmp_mes import registry
from gmp_mes.audit import Actor
from gmp_mes.errors import NotFound
from gmp_mes.registry import LabelSubject, RegistryError
from identity import services as identity
from labels import services
from tests.test_identity_fixtures import PLANT, World, world_fixture  # noqa: F401


def test_identity_provides_what_labels_print(world: World) -> None:
    patient = world.enrol(given_name="Grace", family_name="Hopper")
    bag = world.item(patient["coi_id"], batch_number="B-7")
    (provider,) = registry.label_subjects.providers()
    with world.app.app_context(), world.db.transaction(actor=Actor.system("test")) as s:
        subject = provider.subject(s, bag.lower(), for_update=True)
        assert subject == LabelSubject(**identity.label_data(s, bag))
        assert subject.item_id == bag and subject.patient_name == "HOPPER, Grace"
        band = provider.wristband(s, patient["coi_id"])
        assert band.item_id == patient["wristband_item_id"] and band.kind == "wristband"
        assert provider.wristband(s, band.item_id) == band
        with pytest.raises(NotFound, match="not a patient wristband"):
            provider.wristband(s, bag)
        with pytest.raises(NotFound):
            provider.subject(s, "ITM-NOSUCHIT")
        assert provider.items_of_batch(s, "B-7") == [bag]
        assert subject.site_code == PLANT


def test_labels_refuses_to_guess_without_the_one_provider(monkeypatch) -> None:
    monkeypatch.setattr(registry.label_subjects, "_providers", {})
    with pytest.raises(RegistryError, match="label subjects"):
        services.payload_for_item(None, "ITM-ABCDEFGH")  # type: ignore[arg-type]
