"""Labels API: print (GET records the print), sheet, void, list (SPEC §7)."""

from __future__ import annotations

from typing import Any

from flask import Response, g
from flask_smorest import Blueprint
from marshmallow import RAISE

from gmp_mes.http import commit_unit_of_work, db_session, roles_required, writes
from labels import services
from labels.http import LABEL_RESPONSES, label_file, label_request
from labels.schemas import (
    LabelQuerySchema,
    LabelSchema,
    LabelSetupSchema,
    PrintedSchema,
    PrinterInSchema,
    PrinterSchema,
    PrintToSchema,
    ReplaceSchema,
    SheetQuerySchema,
    StockSchema,
    VoidSchema,
)

blp = Blueprint("labels", __name__, url_prefix="/api/v1", description="Chain-of-identity labels")


@blp.route("/items/<item_id>/label", methods=["GET"])
# A misspelt option (reprnt=true) must not silently print an original: unknown -> 422.
@blp.arguments(LabelQuerySchema, location="query", unknown=RAISE)
@blp.doc(responses=LABEL_RESPONSES)
@roles_required("operator", "clinician")
@writes
def item_label(query: dict[str, Any], item_id: str) -> Response:
    """Print the item's label as png, svg, pdf or zpl (every print recorded), or with
    ``preview=true`` a marked preview that records nothing and never verifies."""
    request, preview = label_request(query)
    if preview:
        return label_file(services.preview_label(db_session(), item_id, request))
    printed = services.print_label(db_session(), item_id, request, user_id=g.user.id)
    commit_unit_of_work()  # the print is recorded; render with no lock held
    return label_file(printed)


@blp.route("/labels/sheet", methods=["GET"])
@blp.arguments(SheetQuerySchema, location="query", unknown=RAISE)
@blp.doc(responses={"200": {"description": "PDF label sheet", "content": {"application/pdf": {}}}})
@roles_required("operator", "clinician")
@writes
def label_sheet(query: dict[str, Any]) -> Response:
    """A PDF sheet (A4 or letter) with the labels of several items, each print recorded."""
    items = query.pop("items").split(",")
    printed = services.print_sheet(
        db_session(), items, services.PrintRequest(format="pdf", **query), user_id=g.user.id
    )
    commit_unit_of_work()  # the prints are recorded; render the sheet with no lock held
    return label_file(printed)


@blp.route("/items/<item_id>/labels", methods=["GET"])
@blp.response(200, LabelSchema(many=True))
@roles_required()
def item_labels(item_id: str) -> list[services.LabelRecord]:
    """Every print of the item's label, with voids."""
    return services.labels_of_item(db_session(), item_id)


@blp.route("/items/<item_id>/labels/<label_id>/void", methods=["POST"])
@blp.arguments(VoidSchema)
@blp.response(200, LabelSchema)
@blp.doc(
    responses={
        "403": {"description": "not a user of the item's current site nor QA (wrong_site)"},
        "409": {"description": "that copy is already voided (already_voided)"},
    }
)
@roles_required("operator", "qa")
def void_label(body: dict[str, Any], item_id: str, label_id: str) -> services.LabelRecord:
    """Void one printed copy: its payload fails every online check from now on; the
    item's other copies stay valid. Users of the item's current site and QA only
    (403 ``wrong_site``)."""
    return services.void_label(db_session(), item_id, label_id, reason=body["reason"], user=g.user)


@blp.route("/items/<item_id>/labels/<label_id>/replace", methods=["POST"])
@blp.arguments(ReplaceSchema)
@blp.doc(
    responses={
        "200": {
            "description": "the replacement label (a new serial, marked REPRINT); headers "
            "X-Label-Id (the new copy) and X-Replaced-Label-Id (the copy voided)",
            "content": {t: {} for t in services.MEDIA_TYPES.values()},
        },
        "403": {"description": "not a user of the item's current site nor QA (wrong_site)"},
        "409": {"description": "that copy is already voided (already_voided)"},
    }
)
@roles_required("operator", "clinician", "qa")
def replace_label(body: dict[str, Any], item_id: str, label_id: str) -> Response:
    """Void a damaged or lost copy and print its replacement in one step (both recorded
    and audited in one transaction). Users of the item's current site and QA only."""
    printed = services.replace_label(
        db_session(),
        item_id,
        label_id,
        reason=body.pop("reason"),
        request=services.PrintRequest(**body),
        user=g.user,
    )
    return label_file(printed)


@blp.route("/items/<item_id>/label/print", methods=["POST"])
@blp.arguments(PrintToSchema)
@blp.response(201, PrintedSchema)
@blp.doc(responses={"409": {"description": "the printer did not take the label "
                                           "(printer_unreachable): no print recorded, the "
                                           "job recorded as failed; another print of the item "
                                           "is in flight (print_in_progress)"}})
@roles_required("operator", "clinician")
def print_to_printer(body: dict[str, Any], item_id: str) -> dict[str, Any]:
    """Send the item's label (ZPL) to a networked printer of the user's site over raw
    TCP; the print is recorded only when the printer took it."""
    printer = body.pop("printer")
    printed = send_to_printer(item_id, printer, services.PrintRequest(format="zpl", **body))
    return {"label_ids": [label.label_id for label in printed.labels], "printer": printer}


def send_to_printer(item_id: str, printer: str,
                    request: services.PrintRequest) -> services.PrintedLabel:
    """The outbox of a networked print (API and pages): transaction 1 records the job
    ``pending`` and commits; the TCP send runs with no transaction open (a hanging
    printer holds no lock); transaction 2 records the copies as printed, or the job as
    failed (committed before the 409 ``printer_unreachable``)."""
    job = services.queue_print_job(db_session(), item_id, printer, request, user=g.user)
    commit_unit_of_work()
    services.send_print_job(job)
    printed = services.finish_print_job(db_session(), job, user_id=g.user.id)
    if job.failure is not None:
        commit_unit_of_work()  # the failure is on record before the refusal
        raise services.print_refusal(job)
    return printed


@blp.route("/sites/<site_code>/labels", methods=["GET"])
@blp.response(200, LabelSetupSchema)
@roles_required()
def label_setup(site_code: str) -> dict[str, Any]:
    """The site's label stock per kind of label and its label printers."""
    session = db_session()
    return {"stocks": services.stocks_of(session, site_code),
            "printers": services.printers_of(session, site_code)}


@blp.route("/sites/<site_code>/labels/stocks/<kind>", methods=["PUT"])
@blp.arguments(StockSchema)
@blp.response(200, LabelSetupSchema)
@roles_required("admin")
def set_stock(body: dict[str, Any], site_code: str, kind: str) -> dict[str, Any]:
    """Choose the label stock (2x1, 3x2, 4x2 inch) of one kind of label at the site."""
    session = db_session()
    services.set_stock(session, site_code, kind, body["stock"])
    return {"stocks": services.stocks_of(session, site_code),
            "printers": services.printers_of(session, site_code)}


@blp.route("/sites/<site_code>/labels/printers", methods=["POST"])
@blp.arguments(PrinterInSchema)
@blp.response(201, PrinterSchema)
@roles_required("admin")
def add_printer(body: dict[str, Any], site_code: str) -> Any:
    """Configure a networked label printer (raw TCP, Zebra port 9100) of the site."""
    return services.add_printer(db_session(), site_code, **body)
