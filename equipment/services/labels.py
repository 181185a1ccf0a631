"""Equipment labels (kind ``EQP``, SPEC §11): the equipment describes itself to labels
(``labels.services.AssetLabel``) and locks its own row before a print, as print control
needs (one original, one serial per copy). The label carries no expiry: whether the
equipment may be used (service state, calibration) is read online at every scan."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from equipment.models import Equipment
from equipment.services._common import get_equipment
from equipment.services.step import EQUIPMENT_KIND_CODE
from gmp_mes.models import Site
from labels import services as labels


def _subject(session: Session, equipment: Equipment) -> labels.AssetLabel:
    timezone = session.scalar(select(Site.timezone).where(Site.code == equipment.site_code))
    return labels.AssetLabel(
        kind_code=EQUIPMENT_KIND_CODE, subject_id=equipment.equipment_id, title="EQUIPMENT",
        lines=(equipment.name, equipment.type.replace("_", " "),
               f"SITE {equipment.site_code}"),
        expires_at=None, site_code=equipment.site_code, site_timezone=timezone or "UTC")


def print_equipment_label(session: Session, equipment_id: str, request: labels.PrintRequest,
                          *, user_id: int) -> labels.PrintedLabel:
    """Record and render the equipment's label (the first print the original, later ones
    reprints with a reason); the equipment row is locked first."""
    equipment = get_equipment(session, equipment_id, for_update=True)
    return labels.print_asset_label(session, _subject(session, equipment), request,
                                    user_id=user_id)


def preview_equipment_label(session: Session, equipment_id: str,
                            request: labels.PrintRequest) -> labels.PrintedLabel:
    """A marked preview that records nothing and never verifies."""
    equipment = get_equipment(session, equipment_id)
    return labels.preview_asset_label(session, _subject(session, equipment), request)


def equipment_labels(session: Session, equipment_id: str) -> list[labels.AssetLabelRecord]:
    """Every printed copy of the equipment's label, newest first."""
    equipment = get_equipment(session, equipment_id)
    return labels.asset_labels_of(session, EQUIPMENT_KIND_CODE, equipment.equipment_id)
