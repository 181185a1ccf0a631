"""identity answers the labels seam (``gmp_mes.registry.label_subjects``): what a label
of an item prints, the patient wristband, the items of a batch. It only adapts the
public functions of ``identity.services``; labels never imports identity."""

from __future__ import annotations

from sqlalchemy.orm import Session

from gmp_mes import registry
from gmp_mes.errors import NotFound
from gmp_mes.registry import LabelSubject
from identity import services


class IdentityLabelSubjects:
    """The ``registry.LabelSubjects`` identity provides."""

    def subject(self, session: Session, item_id: str, *,
                for_update: bool = False) -> LabelSubject:
        if for_update:
            # The item row locked until commit before anything is read for the print.
            item_id = services.get_item(session, item_id, for_update=True).item_id
        return LabelSubject(**services.label_data(session, item_id))

    def wristband(self, session: Session, coi_or_item_id: str) -> LabelSubject:
        wanted = (coi_or_item_id or "").strip().upper()
        if wanted.startswith("ITM-"):
            item = services.get_item(session, wanted)
        else:
            patient = services.get_patient(session, wanted)
            if not patient.wristband_item_id:
                raise NotFound(f"patient {wanted} has no wristband")
            item = services.get_item(session, patient.wristband_item_id)
        if item.kind != "wristband":
            raise NotFound(f"{item.item_id} is not a patient wristband")
        return LabelSubject(**services.label_data(session, item.item_id))

    def items_of_batch(self, session: Session, batch_number: str) -> list[str]:
        return [item.item_id for item in services.items_of_batch(session, batch_number)]


def provide() -> None:
    """Called by ``identity.init_app``."""
    registry.label_subjects.provide("identity", IdentityLabelSubjects())
