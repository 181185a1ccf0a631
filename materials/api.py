"""HTTP API of the materials domain (SPEC §11): parse, authorise, call services, dump."""

from __future__ import annotations

from typing import Any

from flask import Response, g
from flask_smorest import Blueprint
from marshmallow import RAISE

import labels.http
from gmp_mes.http import commit_unit_of_work, db_session, roles_required, writes
from materials import services
from materials.models import Material, MaterialLot
from materials.schemas import (
    LotDecisionInSchema,
    LotDetailSchema,
    LotInSchema,
    LotRejectInSchema,
    LotSchema,
    MaterialInSchema,
    MaterialSchema,
    WhereUsedSchema,
)

blp = Blueprint("materials_api", __name__, url_prefix="/api/v1",
                description="Material master, lots (receipt, QA release and rejection), "
                            "where used (the recall)")


@blp.route("/materials", methods=["POST"])
@blp.arguments(MaterialInSchema)
@blp.response(201, MaterialSchema)
@roles_required("qa", "admin")
def create_material(body: dict[str, Any]) -> Material:
    """A material of the master: `code` (the code process steps name), `name`, `kind`
    (reagent, vector, medium, consumable, excipient), `unit`, optional `storage`.
    409 `already_exists` for a code in use."""
    return services.create_material(db_session(), user_id=g.user.id, **body)


@blp.route("/materials", methods=["GET"])
@blp.response(200, MaterialSchema(many=True))
@roles_required()
def list_materials() -> list[Material]:
    """Every material, by code (a gmp-mes extension of SPEC §11)."""
    return services.list_materials(db_session())


@blp.route("/materials/<code>/lots", methods=["POST"])
@blp.arguments(LotInSchema)
@blp.response(201, LotSchema)
@roles_required("operator", "qc", "qa")
def receive_lot(body: dict[str, Any], code: str) -> MaterialLot:
    """Receive a lot: `supplier`, `supplier_lot`, `expires_at`, `quantity`, optional
    `coa_reference` → `lot_id` (`LOT-...`) in `quarantine` with all of it `remaining`.
    404 for an unknown material; 422 for a lot already expired."""
    return services.receive_lot(db_session(), code, user_id=g.user.id, **body)


@blp.route("/lots/<lot_id>", methods=["GET"])
@blp.response(200, LotDetailSchema)
@roles_required()
def get_lot(lot_id: str) -> services.LotView:
    """Status, expiry, remaining and every use (batch, step, quantity, who, when)."""
    return services.lot_view(db_session(), lot_id)


@blp.route("/lots/<lot_id>/release", methods=["POST"])
@blp.arguments(LotDecisionInSchema)
@blp.response(201, LotDetailSchema)
@roles_required("qa")
def release_lot(body: dict[str, Any], lot_id: str) -> services.LotView:
    """QA releases a lot in quarantine (signature meaning `released`). 403
    `segregation_of_duties` for the user who received it; 409 `invalid_transition` when
    it is no longer in quarantine."""
    session = db_session()
    services.release_lot(session, lot_id, user_id=g.user.id, signature=body["signature"])
    return services.lot_view(session, lot_id)


@blp.route("/lots/<lot_id>/reject", methods=["POST"])
@blp.arguments(LotRejectInSchema)
@blp.response(201, LotDetailSchema)
@roles_required("qa")
def reject_lot(body: dict[str, Any], lot_id: str) -> services.LotView:
    """QA rejects a lot in quarantine with a `reason` (signature meaning `rejected`);
    409 `invalid_transition` when it is no longer in quarantine."""
    session = db_session()
    services.reject_lot(session, lot_id, user_id=g.user.id, signature=body["signature"],
                        reason=body["reason"])
    return services.lot_view(session, lot_id)


@blp.route("/lots/<lot_id>/where-used", methods=["GET"])
@blp.response(200, WhereUsedSchema)
@roles_required()
def where_used(lot_id: str) -> services.WhereUsed:
    """The recall: every batch that used the lot (quantity, uses), its final-product bags
    with status, and the COIs that received them; batches with an administered bag
    first, and `patients` (each COI once, `administered` marked) administered first."""
    return services.where_used(db_session(), lot_id)


@blp.route("/lots/<lot_id>/label", methods=["GET"])
@blp.arguments(labels.http.LabelQuerySchema, location="query", unknown=RAISE)
@blp.doc(responses=labels.http.LABEL_RESPONSES)
@roles_required("operator", "qc", "qa")
@writes
def lot_label(query: dict[str, Any], lot_id: str) -> Response:
    """The lot's label (`format` png, svg, pdf or zpl): payload kind `LOT`, COI field `-`,
    the lot's expiry; every copy recorded with its serial (`reprint=true&reason=...` for a
    reprint; `preview=true`: a marked preview that records nothing and never verifies)."""
    session = db_session()
    request, preview = labels.http.label_request(query)
    subject = services.lot_label_subject(session, lot_id, for_update=not preview)
    if preview:
        return labels.http.label_file(services.preview_lot_label(session, subject, request))
    printed = services.print_lot_label(session, subject, request, user_id=g.user.id)
    commit_unit_of_work()  # the print is recorded; render with no lock held
    return labels.http.label_file(printed)
