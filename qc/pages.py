"""Pages of the qc domain: QC work list and result entry (qc), release queue (qa).

Views only parse forms, call ``qc.services`` and render; a refused action comes back
on the same page with its reasons (field errors next to their fields), never a 500.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from markupsafe import Markup, escape
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from batches import services as batches
from gmp_mes import paging
from gmp_mes.accounts import Person
from gmp_mes.errors import DomainError, field_error
from gmp_mes.http import db_session, form_signature, roles_required, undo_failed_form
from gmp_mes.schemas import DecimalSeparatorRefused, form_number
from qc import services

bp = Blueprint("qc", __name__, template_folder="templates")


def _refused(error: DomainError) -> dict[str, list[str]]:
    """Undo the failed unit of work, keep what must be kept (lockout count)."""
    undo_failed_form(error)
    return dict(error.errors or {})


@bp.route("/qc")
@roles_required("qc", "qa")
def work_list() -> str:
    return render_template("qc/work_list.html", rows=services.pending_qc(db_session()))


@bp.route("/qc/<batch_number>", methods=["GET", "POST"])
@roles_required("qc", "qa")
def entry_page(batch_number: str) -> tuple[str, int] | str | Response:
    session = db_session()
    errors: dict[str, list[str]] = {}
    form: dict[str, str] = {}
    status = 200
    if request.method == "POST":
        if not g.user.has_role("qc"):
            flash("entering QC results needs the role qc", "error")
            return redirect(url_for("qc.entry_page", batch_number=batch_number))
        form = {k: request.form.get(k, "") for k in
                ("test", "value", "outcome", "unit", "method", "sample_item_id", "corrects",
                 "reason")}
        corrects = form["corrects"].strip()
        try:
            try:
                value = form_number(form["value"], g.user.site.decimal_separator)
            except DecimalSeparatorRefused as exc:
                raise field_error("value", str(exc)) from None
            if isinstance(value, str):
                raise field_error("value", "must be a number")
            if corrects and not corrects.isdigit():
                raise field_error("corrects", "must be a result number")
            result = services.record_result(
                session, batch_number, test=form["test"].strip(), value=value,
                outcome=form["outcome"].strip() or None, unit=form["unit"].strip() or None,
                method=form["method"].strip() or None,
                sample_item_id=form["sample_item_id"].strip().upper() or None,
                corrects=int(corrects) if corrects else None, reason=form["reason"] or None,
                user_id=g.user.id, signature=form_signature("performed"),
            )
        except DomainError as error:
            errors = _refused(error)
            errors.setdefault("_form", []).append(error.detail)
            status = error.status
        else:
            flash(f"{result.test}: {'PASS' if result.passed else 'FAIL'} "
                  f"(result {result.id}, computed against {result.specification})",
                  "ok" if result.passed else "error")
            return redirect(url_for("qc.entry_page", batch_number=batch_number))
    batch = batches.get_batch(session, batch_number)
    return render_template("qc/entry.html", batch=batch,
                           tests=services.qc_overview(session, batch_number),
                           can_enter=services.qc_open(batch.status),
                           errors=errors, form=form), status


@bp.route("/qc/<batch_number>/results/<int:result_id>/<action>", methods=["POST"])
@roles_required("qc", "qa")
def result_action(batch_number: str, result_id: int, action: str) -> Response:
    session = db_session()
    try:
        if action == "review":
            services.review_result(session, result_id, user_id=g.user.id,
                                   signature=form_signature("reviewed"), batch_number=batch_number)
        elif action == "invalidate" and g.user.has_role("qc"):
            services.invalidate_result(session, result_id, user_id=g.user.id,
                                       signature=form_signature("performed"),
                                       reason=request.form.get("reason", ""),
                                       batch_number=batch_number)
        else:
            flash(f"unknown or not permitted action {action}", "error")
            return redirect(url_for("qc.entry_page", batch_number=batch_number))
    except DomainError as error:
        fields = _refused(error)
        detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in fields.items())
        flash(f"{error.detail}{' (' + detail + ')' if detail else ''}", "error")
    else:
        flash(f"result {result_id}: {action} recorded", "ok")
    return redirect(url_for("qc.entry_page", batch_number=batch_number))


@bp.route("/qa/release")
@roles_required("qa")
def release_page() -> str:
    return _release_queue()


def _release_queue(kept: dict[str, Any] | None = None) -> str:
    number, size = paging.requested(request.args, default_size=20)
    queue, page = paging.cut(services.release_queue(
        db_session(), limit=size + 1, offset=(number - 1) * size), number, size)
    return render_template("qc/release.html", queue=queue, page=page, kept=kept)


@bp.route("/qa/release/<batch_number>", methods=["POST"])
@roles_required("qa")
def release_action(batch_number: str) -> Response | tuple[str, int]:
    session = db_session()
    action = request.form.get("action", "")
    try:
        if action in ("release", "conditional"):
            decision = services.release_batch(
                session, batch_number, user_id=g.user.id, signature=form_signature("released"),
                conditional=action == "conditional",
                justification=request.form.get("justification") or None)
        elif action == "reject":
            decision = services.reject_batch(session, batch_number, user_id=g.user.id,
                                             signature=form_signature("rejected"),
                                             reason=request.form.get("reason", ""))
        else:
            flash(f"unknown action {action!r}", "error")
            return redirect(url_for("qc.release_page"))
    except DomainError as error:
        # The queue comes back with what was typed in that form (never the password),
        # the message at the form and whose signature failed (issue 15).
        fields = _refused(error)
        messages = [f"{k.replace('signature.password', 'your password')}: {', '.join(v)}"
                    for k, v in fields.items()]
        kept = {"batch": batch_number, "action": action,
                "justification": request.form.get("justification", ""),
                "reason": request.form.get("reason", ""),
                "signature_failed": "signature.password" in fields,
                "messages": [error.detail, *messages]}
        return _release_queue(kept), error.status
    else:
        label = {"release": "released", "conditional_release": "CONDITIONALLY released",
                 "final_release": "finally released (conditional release ended)",
                 "reject": "rejected"}.get(decision.kind, decision.kind)
        flash(f"batch {batch_number} {label}", "ok")
    return redirect(url_for("qc.release_page"))


def _table(head: list[str], rows: list[list[Any]]) -> Markup:
    cells = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return Markup('<table class="data"><tr>' + "".join(f"<th>{escape(h)}</th>" for h in head)
                  + "</tr>" + cells + "</table>")


def qc_panel(session: Session, user: Person) -> tuple[str, Markup] | None:
    """Dashboard: batches with QC results still to enter (overdue first)."""
    if not user.has_role("qc"):
        return None
    rows = []
    for batch, open_ in services.pending_qc(session)[:20]:
        link = url_for("qc.entry_page", batch_number=batch.batch_number)
        tests = ", ".join(
            f"{escape(r.test)}{' (OVERDUE)' if r.overdue else ''}" for r in open_)
        rows.append([f'<a href="{link}">{escape(batch.batch_number)}</a>',
                     escape(batch.status), tests])
    if not rows:
        return ("QC pending", Markup('<p class="hint">No QC result outstanding.</p>'))
    return ("QC pending", _table(["Batch", "Status", "Tests open"], rows))


def release_panel(session: Session, user: Person) -> tuple[str, Markup] | None:
    """Dashboard: batches awaiting QA release, with what is missing."""
    if not user.has_role("qa"):
        return None
    rows = []
    for entry in services.release_queue(session, limit=20):
        missing = "; ".join(escape(p.code) for p in entry.problems) or (
            "final release due" if entry.final_release_due else "ready")
        link = url_for("qc.release_page") + f"#b-{entry.batch_number}"
        rows.append([f'<a href="{link}">{escape(entry.batch_number)}</a>',
                     escape(entry.status), missing])
    if not rows:
        return ("Batches awaiting release",
                Markup('<p class="hint">No batch awaits release.</p>'))
    return ("Batches awaiting release", _table(["Batch", "Status", "Missing"], rows))
