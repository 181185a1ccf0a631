"""Chain of condition (SPEC §14): the rules of the logistics domain.

Other domains call only the names re-exported here; the modules:

- ``templog``: parsing a logger's CSV or JSON readings and their summary (excursions,
  gaps), pure functions;
- ``shipments``: shipping, the temperature log, receipt and reconciliation, QA's
  disposition, the holds (``registry.item_holds``);
- ``storage``: storage units and positions (``registry.storage_positions``);
- ``seams``: the "logistics" section of the executed batch record.

Services take a session, flush and never commit; the request, command or job commits.
"""

from __future__ import annotations

from logistics.services.seams import batch_record_sections
from logistics.services.shipments import (
    SHIPPERS,
    UPLOADERS,
    LogSummary,
    ReceiptOutcome,
    create_shipment,
    decide_shipment,
    get_shipment,
    item_holds,
    list_shipments,
    log_summary,
    readings_of,
    receipts_of,
    receive_shipment,
    shipment_items,
    shipments_of_items,
    shipments_to_handle,
    temperature_log,
    upload_log,
)
from logistics.services.storage import (
    POSITIONS,
    Occupancy,
    create_unit,
    get_unit,
    list_units,
    occupancy,
    position_of,
)
from logistics.services.templog import (
    GAP_FACTOR,
    Excursion,
    Gap,
    Readings,
    Summary,
    TemperatureLogInvalid,
    parse_csv,
    parse_json,
    summarise,
)

__all__ = [
    "GAP_FACTOR",
    "POSITIONS",
    "SHIPPERS",
    "UPLOADERS",
    "Excursion",
    "Gap",
    "LogSummary",
    "Occupancy",
    "Readings",
    "ReceiptOutcome",
    "Summary",
    "TemperatureLogInvalid",
    "batch_record_sections",
    "create_shipment",
    "create_unit",
    "decide_shipment",
    "get_shipment",
    "get_unit",
    "item_holds",
    "list_shipments",
    "list_units",
    "log_summary",
    "occupancy",
    "parse_csv",
    "parse_json",
    "position_of",
    "readings_of",
    "receipts_of",
    "receive_shipment",
    "shipment_items",
    "shipments_of_items",
    "shipments_to_handle",
    "summarise",
    "temperature_log",
    "upload_log",
]
