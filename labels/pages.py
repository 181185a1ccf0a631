"""Label pages: the actions of the item page (/items/<item_id>, owned by identity), the
wristband label replacement reached from the bedside page (/bedside/wristband-label) and
the label-sheet page (/labels).

The item page includes ``labels/item_label_controls.html`` (print/reprint form and a
void form; context ``item`` and ``view.labels``), or the whole section
``labels/_label_controls.html`` (context ``item_id`` and ``labels`` from
labels.services.labels_of_item). Their forms post here.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from flask import Blueprint, Response, flash, g, redirect, render_template, request, url_for
from marshmallow import ValidationError

from gmp_mes.errors import DomainError, NotFound, field_error
from gmp_mes.http import (
    _rollback,
    commit_unit_of_work,
    db_session,
    roles_required,
    undo_failed_form,
)
from gmp_mes.registry import LabelSubject
from gmp_mes.schemas import form_fields
from labels import render, services
from labels.api import send_to_printer
from labels.http import label_file
from labels.models import LabelPrinter
from labels.schemas import LabelQuerySchema, ReplaceSchema, SheetQuerySchema, VoidSchema

bp = Blueprint("labels_pages", __name__, template_folder="templates")


def _item_page(item_id: str) -> Response:
    return redirect(f"/items/{quote(item_id, safe='')}#labels")  # type: ignore[return-value]


def _problem(item_id: str, message: str) -> Response:
    _rollback()
    flash(message, "error")
    return _item_page(item_id)


@bp.route("/items/<item_id>/labels/print", methods=["POST"])
@roles_required("operator", "clinician")
def print_label(item_id: str) -> Response:
    form: dict[str, str | bool] = {
        k: v for k, v in request.form.items() if k != "csrf_token" and v != ""}
    form["reprint"] = "reprint" in request.form
    try:
        query = LabelQuerySchema().load(form)
        query.pop("preview")  # the page's previews have their own link
        printed = services.print_label(
            db_session(), item_id, services.PrintRequest(**query), user_id=g.user.id
        )
    except ValidationError as exc:
        return _problem(item_id, f"label not printed: {_messages(exc)}")
    except DomainError as exc:
        return _problem(item_id, f"label not printed: {exc.detail}")
    commit_unit_of_work()  # the print is recorded; render with no lock held
    return _file(printed)


def _file(printed: services.PrintedLabel, *, inline: bool = False) -> Response:
    """A PDF opens in the browser for its print dialog (issue 15); PNG and ZPL files
    are downloads for a label printer's own tool, previews open in the browser."""
    return label_file(printed,
                      inline=inline or printed.media_type == services.MEDIA_TYPES["pdf"])


def site_printers() -> list[LabelPrinter]:
    """The label printers of the logged-in user's site (for the print form)."""
    user = g.get("user")
    site = user.site.code if user is not None and user.site is not None else None
    return services.printers_of(db_session(), site)


@bp.route("/items/<item_id>/labels/preview", methods=["GET"])
@roles_required("operator", "clinician")
def preview_label(item_id: str) -> Response:
    """A marked preview (PDF or PNG): records no print, its code never verifies."""
    fmt = request.args.get("format", "pdf")
    if fmt not in ("pdf", "png"):
        fmt = "pdf"
    try:
        printed = services.preview_label(db_session(), item_id,
                                         services.PrintRequest(format=fmt))
    except DomainError as exc:
        return _problem(item_id, f"no preview: {exc.detail}")
    return _file(printed, inline=True)


@bp.route("/items/<item_id>/labels/send", methods=["POST"])
@roles_required("operator", "clinician")
def send_label(item_id: str) -> Response:
    """Send the label to a networked printer of the site; back to the item page
    (post/redirect/get), saying whether the printer took it."""
    form = request.form
    reprint = "reprint" in form
    try:
        copies = int(form.get("copies") or 1)
        printed = send_to_printer(
            item_id, form.get("printer", ""),
            services.PrintRequest(format="zpl", workstation=form.get("workstation") or None,
                                  copies=copies, reprint=reprint,
                                  reason=form.get("reason") or None))
    except ValueError:
        return _problem(item_id, "label not printed: copies must be a whole number")
    except DomainError as exc:
        return _problem(item_id, f"label not printed: {exc.detail}")
    serials = ", ".join(str(label.serial) for label in printed.labels)
    flash(f"Label sent to printer {form.get('printer')}: copy {serials} recorded.", "ok")
    return _item_page(item_id)


@bp.route("/items/<item_id>/labels/void", methods=["POST"], defaults={"label_id": None})
@bp.route("/items/<item_id>/labels/<label_id>/void", methods=["POST"])
@roles_required("operator", "qa")
def void_label(item_id: str, label_id: str | None) -> Response:
    label_id = label_id or request.form.get("label_id", "").strip()
    if not label_id:
        return _problem(item_id, "label not voided: choose the label to void")
    try:
        body = VoidSchema().load({"reason": request.form.get("reason", "").strip()})
        services.void_label(db_session(), item_id, label_id, reason=body["reason"], user=g.user)
    except ValidationError:
        return _problem(item_id, "label not voided: a reason is required")
    except DomainError as exc:
        return _problem(item_id, f"label not voided: {exc.detail}")
    flash(
        f"label {label_id} voided: that copy fails every scan from now on "
        "(the item's other copies stay valid)",
        "ok",
    )
    return _item_page(item_id)


def _back(item_id: str, back: str | None, message: str) -> Response:
    _rollback()
    flash(message, "error")
    if back == "bedside":
        return redirect(  # type: ignore[return-value]
            url_for("labels_pages.wristband_label", wristband=item_id)
        )
    return _item_page(item_id)


@bp.route("/items/<item_id>/labels/replace", methods=["POST"], defaults={"label_id": None})
@bp.route("/items/<item_id>/labels/<label_id>/replace", methods=["POST"])
@roles_required("operator", "clinician", "qa")
def replace_label(item_id: str, label_id: str | None) -> Response:
    """Void a damaged copy and print its replacement in one step: the file comes back."""
    fields = form_fields(request.form)
    back = fields.pop("back", None)
    chosen = fields.pop("label_id", None)  # the copy picked in the form's select
    label_id = label_id or chosen
    if not label_id:
        return _back(item_id, back, "label not replaced: choose the copy to replace")
    try:
        body = ReplaceSchema().load(fields)
        printed = services.replace_label(
            db_session(),
            item_id,
            label_id,
            reason=body.pop("reason"),
            request=services.PrintRequest(**body),
            user=g.user,
        )
    except ValidationError as exc:
        return _back(item_id, back, f"label not replaced: {_messages(exc)}")
    except DomainError as exc:
        return _back(item_id, back, f"label not replaced: {exc.detail}")
    return _file(printed)


@bp.route("/bedside/wristband-label", methods=["GET"])
@roles_required("clinician", "qa")
def wristband_label() -> str | tuple[str, int]:
    """A damaged wristband at the bedside: find it by the COI ID (or wristband item ID)
    printed on it, and replace the damaged copy."""
    wanted = (request.args.get("wristband") or "").strip().upper()
    wristband: LabelSubject | None = None
    labels: list[services.LabelRecord] = []
    error = None
    if wanted:
        session = db_session()
        try:
            item = services.wristband_of(session, wanted)
        except NotFound:
            error = f"no patient wristband {services.printable_id(wanted)}"
        else:
            wristband = item
            labels = services.labels_of_item(session, item.item_id)
    page = render_template(
        "labels/wristband_label.html",
        wanted=wanted,
        wristband=wristband,
        labels=labels,
        error=error,
    )
    return (page, 404) if error else page


def _messages(exc: ValidationError) -> str:
    messages = exc.normalized_messages()
    return "; ".join(
        f"{k}: {', '.join(map(str, v if isinstance(v, list) else [v]))}"
        for k, v in messages.items()
    )


@bp.route("/labels/setup", methods=["GET", "POST"])
@roles_required("admin")
def setup_page() -> str | Response | tuple[str, int]:
    """Label stock per kind of label and networked printers of a site (admin)."""
    from sqlalchemy import select

    from gmp_mes.models import Site

    session = db_session()
    sites = list(session.scalars(select(Site.code).order_by(Site.code)))
    site = (request.values.get("site") or (g.user.site.code if g.user.site else "")
            or (sites[0] if sites else "")).strip().upper()
    errors: dict[str, list[str]] = {}
    error = None
    if request.method == "POST":
        try:
            if request.form.get("what") == "stock":
                services.set_stock(session, site, request.form.get("kind", ""),
                                   request.form.get("stock", ""))
                message = f"{site}: {request.form.get('kind', '').replace('_', ' ')} labels " \
                          f"on {request.form.get('stock')} inch stock"
            else:
                port = request.form.get("port") or "9100"
                dpi = request.form.get("dpi") or "203"
                if not port.isdigit() or not dpi.isdigit():
                    raise field_error("port", "port and dpi are whole numbers")
                printer = services.add_printer(
                    session, site, name=request.form.get("name", ""),
                    host=request.form.get("host", ""), port=int(port), dpi=int(dpi))
                message = f"{site}: printer {printer.name} added"
        except DomainError as exc:
            # Roll back but keep the request's session: the page is rendered from it next
            # (a closed-and-reused session would reopen a write nobody ends).
            undo_failed_form(exc)
            errors = {k: list(v) for k, v in (exc.errors or {}).items()}
            error = exc.detail
        else:
            flash(message, "ok")
            return redirect(  # type: ignore[return-value]
                url_for("labels_pages.setup_page", site=site))
    page = render_template(
        "labels/setup.html", sites=sites, site=site, errors=errors, error=error,
        form=request.form, stocks=services.stocks_of(session, site) if site in sites else {},
        printers=services.printers_of(session, site), choices=list(render.STOCKS))
    return (page, 422 if errors else 409) if error else page


@bp.route("/labels", methods=["GET"])
@roles_required("operator", "clinician")
def sheet_page() -> str:
    """Print a PDF sheet of labels: item IDs typed or scanned, or every item of a batch."""
    return render_template("labels/sheet.html", form=request.args)


@bp.route("/labels/sheet", methods=["POST"])
@roles_required("operator", "clinician")
def sheet_print() -> Response:
    items = [i for i in re.split(r"[\s,;]+", request.form.get("items", "")) if i]
    batch = request.form.get("batch_number", "").strip()
    back = redirect(url_for("labels_pages.sheet_page"))
    try:
        if batch:
            items += services.items_of_batch(db_session(), batch)
            if not items:
                raise ValidationError({"batch_number": [f"batch {batch} has no items"]})
        query = SheetQuerySchema().load(
            {
                "items": ",".join(items) or " ",
                "paper": request.form.get("paper", "a4"),
                "reprint": "reprint" in request.form,
                "reason": request.form.get("reason") or None,
                "workstation": request.form.get("workstation") or None,
            }
        )
        printed = services.print_sheet(
            db_session(),
            query.pop("items").split(","),
            services.PrintRequest(format="pdf", **query),
            user_id=g.user.id,
        )
    except ValidationError as exc:
        _rollback()
        flash(f"sheet not printed: {_messages(exc)}", "error")
        return back  # type: ignore[return-value]
    except DomainError as exc:
        _rollback()
        flash(f"sheet not printed: {exc.detail}", "error")
        return back  # type: ignore[return-value]
    commit_unit_of_work()  # the print is recorded; render with no lock held
    response = Response(printed.content, mimetype=printed.media_type)
    response.headers["Content-Disposition"] = f'inline; filename="{printed.filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response
