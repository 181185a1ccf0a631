"""The process page: every loaded version, what changed from the previous one, and QA's
signed approval (EU GMP Chapter 4.3)."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, url_for
from werkzeug.wrappers import Response

from gmp_mes.errors import DomainError
from gmp_mes.http import db_session, form_signature, roles_required, undo_failed_form
from gmp_mes.models import Meaning
from processes import services

bp = Blueprint("processes", __name__, template_folder="templates")


def _refused(error: DomainError) -> None:
    """Undo the failed unit of work, keep what must be kept (lockout count), say why."""
    undo_failed_form(error)
    flash(error.detail, "error")


@bp.route("/processes")
@roles_required("qa", "admin")
def process_list() -> str:
    session = db_session()
    processes = [(p, services.definition_of(p)) for p in services.list_processes(session)]
    # QA sees what changed from the previous version before approving a new one.
    diffs = {p.id: services.definition_diff(session, p) for p, _ in processes if not p.approval}
    return render_template("processes/processes.html", processes=processes, diffs=diffs)


@bp.route("/processes/<code>/<int:version>/approve", methods=["POST"])
@roles_required("qa")
def approve_process(code: str, version: int) -> Response:
    try:
        process = services.approve_process(
            db_session(), code, version, user_id=g.user.id,
            signature=form_signature(Meaning.APPROVED.value),
        )
    except DomainError as error:
        _refused(error)
    else:
        flash(f"process {process.key} approved", "ok")
    return redirect(url_for("processes.process_list"))
