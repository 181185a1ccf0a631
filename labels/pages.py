"""Label page actions for the item page (/items/<item_id>, owned by identity).

The item page includes ``labels/_label_controls.html`` with ``item_id`` and
``labels`` (labels.services.labels_of_item); its forms post here.
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, flash, g, redirect, request
from marshmallow import ValidationError

from gmp_mes.errors import DomainError
from gmp_mes.http import _rollback, db_session, roles_required
from labels import services
from labels.schemas import LabelQuerySchema, VoidSchema

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
    form = {k: v for k, v in request.form.items() if k != "csrf_token" and v != ""}
    form["reprint"] = "reprint" in request.form
    try:
        query = LabelQuerySchema().load(form)
        printed = services.print_label(
            db_session(), item_id, services.PrintRequest(**query), user_id=g.user.id
        )
    except ValidationError as exc:
        messages = exc.normalized_messages()
        text = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in messages.items())  # type: ignore[union-attr]
        return _problem(item_id, f"label not printed: {text}")
    except DomainError as exc:
        return _problem(item_id, f"label not printed: {exc.detail}")
    response = Response(printed.content, mimetype=printed.media_type)
    response.headers["Content-Disposition"] = f'attachment; filename="{printed.filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/items/<item_id>/labels/<label_id>/void", methods=["POST"])
@roles_required("operator", "qa")
def void_label(item_id: str, label_id: str) -> Response:
    try:
        body = VoidSchema().load({"reason": request.form.get("reason", "").strip()})
        services.void_label(
            db_session(), item_id, label_id, reason=body["reason"], user_id=g.user.id
        )
    except ValidationError:
        return _problem(item_id, "label not voided: a reason is required")
    except DomainError as exc:
        return _problem(item_id, f"label not voided: {exc.detail}")
    flash(f"label {label_id} voided: it fails every scan from now on", "ok")
    return _item_page(item_id)
