"""What logistics answers through the seams of gmp_mes.registry: the holds on an item
(identity's bedside check and scan station) and the "logistics" section of the executed
batch record (the shipments of the batch's items with their condition summary: EU GMP
Part IV 6.5, EU GDP 9.2)."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes.audit import format_time
from gmp_mes.localtime import local_and_utc, zone
from gmp_mes.models import Site
from gmp_mes.registry import RecordSection, RecordTable
from identity import services as identity
from logistics.services.shipments import (
    log_summary,
    shipment_items,
    shipments_of_items,
    temperature_log,
)

COLUMNS = ("Shipment", "Items", "Condition", "Shipped, received", "Temperature log",
           "Excursions and gaps", "Hold, disposition")


def batch_record_sections(session: Session, batch_number: str) -> list[RecordSection]:
    """Every shipment one of the batch's items travelled in (starting material to the
    plant, bags to the treatment site), with the condition, the log's summary, the
    excursions and gaps, the hold and QA's disposition."""
    mine = {item.item_id for item in identity.items_of_batch(session, batch_number)}
    data: list[dict[str, object]] = []
    rows: list[tuple[str, ...]] = []
    for shipment in shipments_of_items(session, sorted(mine)):
        tz = zone(session.scalar(select(Site.timezone).where(Site.code == shipment.to_site)))
        items = [si for si in shipment_items(session, shipment.shipment_id)
                 if si.item_id in mine]
        summary = log_summary(temperature_log(session, shipment.shipment_id))
        data.append({
            "shipment_id": shipment.shipment_id, "from_site": shipment.from_site,
            "to_site": shipment.to_site,
            "condition": {"min_c": shipment.min_c, "max_c": shipment.max_c},
            "shipper_id": shipment.shipper_id, "logger_id": shipment.logger_id,
            "courier": shipment.courier, "shipped_at": format_time(shipment.shipped_at),
            "items": [{"item_id": si.item_id, "received_at": format_time(si.received_at)
                       if si.received_at else None} for si in items],
            "temperature_log": None if summary is None else {
                "readings": summary.readings, "min_c": summary.log.min_c,
                "max_c": summary.log.max_c, "first_at": format_time(summary.log.first_at),
                "last_at": format_time(summary.log.last_at),
                "sha256": summary.log.file_sha256, "excursions": summary.excursions,
                "gaps": summary.gaps},
            "hold": shipment.hold, "decision": shipment.decision,
            "justification": shipment.justification,
            "decided_at": format_time(shipment.decided_at) if shipment.decided_at else None,
        })
        log_text = ("none" if summary is None else
                    f"{summary.readings:,} readings, {summary.log.min_c:g} to "
                    f"{summary.log.max_c:g} °C")
        excursions = ("—" if summary is None else "; ".join(
            f"{local_and_utc(e['start'], tz)}, {e['minutes']:g} min, extreme {e['extreme_c']:g} °C"
            for e in summary.excursions) or "none")
        gaps = ("—" if summary is None else "; ".join(
            f"{local_and_utc(g['start'], tz)}, {g['minutes']:g} min"
            for g in summary.gaps) or "none")
        verdict = ("none" if shipment.hold is None else
                   f"{shipment.hold}: " + (f"QA {shipment.decision}"
                                           + (f" ({shipment.justification})"
                                              if shipment.justification else "")
                                           if shipment.decision else "awaiting QA"))
        shipped = local_and_utc(shipment.shipped_at, tz)
        arrived = (local_and_utc(shipment.received_at, tz) if shipment.received_at
                   else "in transit")
        rows.append((
            f"{shipment.shipment_id} {shipment.from_site} → {shipment.to_site}",
            ", ".join(si.item_id for si in items),
            f"{shipment.min_c:g} to {shipment.max_c:g} °C",
            f"{shipped}; {arrived}", log_text,
            f"excursions: {excursions}; gaps: {gaps}", verdict))
    return [RecordSection("logistics", json.loads(json.dumps(data)),
                          RecordTable("Shipments and their condition", COLUMNS, tuple(rows),
                                      empty="no shipment recorded"))]
