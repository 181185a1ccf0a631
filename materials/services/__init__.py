"""What touches the cells (SPEC §11): the rules of the material master, lots and their use.

Other domains call only the names re-exported here (``materials.services.<name>``); the
modules are the rooms of the domain's rules:

- ``master``: materials (the codes process steps name);
- ``lots``: receipt into quarantine, QA's signed release and rejection, the lot view;
- ``steps``: the step check and consumption (``registry.step_requirements``);
- ``recall``: where a lot was used, in one SQL statement (forward traceability);
- ``seams``: the batch record's "materials" section, what a scanned LOT label names.

Services take a session, flush and never commit; the request, command or job commits.
"""

from __future__ import annotations

from materials.models import LotStatus, MaterialKind
from materials.services._common import LOT_ID, QuantityInvalid, exact, get_lot, show
from materials.services.lots import (
    LotsToHandle,
    LotUseView,
    LotView,
    decidable,
    decision_content,
    lot_view,
    lots_of_material,
    lots_to_handle,
    receive_lot,
    recent_lots,
    reject_lot,
    release_lot,
)
from materials.services.master import KINDS, create_material, get_material, list_materials
from materials.services.recall import (
    RecalledBatch,
    RecalledItem,
    WhereUsed,
    where_used,
    where_used_statement,
)
from materials.services.seams import (
    BatchLotUse,
    batch_record_sections,
    labels_of_lot,
    lot_fitness,
    lot_label_subject,
    preview_lot_label,
    print_lot_label,
    scanned_lot,
    uses_of_batch,
)
from materials.services.steps import LOT_KIND, check_step_materials, resolve_lot_ref

__all__ = [
    "KINDS",
    "LOT_ID",
    "LOT_KIND",
    "BatchLotUse",
    "LotStatus",
    "LotUseView",
    "LotView",
    "LotsToHandle",
    "MaterialKind",
    "QuantityInvalid",
    "RecalledBatch",
    "RecalledItem",
    "WhereUsed",
    "batch_record_sections",
    "check_step_materials",
    "create_material",
    "decidable",
    "decision_content",
    "exact",
    "get_lot",
    "get_material",
    "labels_of_lot",
    "list_materials",
    "lot_fitness",
    "lot_label_subject",
    "lot_view",
    "lots_of_material",
    "lots_to_handle",
    "preview_lot_label",
    "print_lot_label",
    "receive_lot",
    "recent_lots",
    "reject_lot",
    "release_lot",
    "resolve_lot_ref",
    "scanned_lot",
    "show",
    "uses_of_batch",
    "where_used",
    "where_used_statement",
]
