"""Admin page of the clock: jobs held after a forward clock jump (gmp_mes.clockwatch), and
the confirmation that the time is right, with its reason (EU GMP Annex 11 §12.4)."""

from __future__ import annotations

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from gmp_mes import clockwatch
from gmp_mes.clock import utcnow
from gmp_mes.errors import DomainError
from gmp_mes.http import db_session, roles_required
from gmp_mes.registry import NavGroup, add_nav

bp = Blueprint("clock_pages", __name__, url_prefix="/admin", template_folder="templates")
MAX_REASON = 500


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    add_nav(app, "clock_pages.clock", "Clock", ("admin",), group=NavGroup.ADMIN)


@bp.route("/clock")
@roles_required("admin")
def clock() -> str:
    return render_template("admin/clock.html", now=utcnow(), holds=clockwatch.holds(db_session()))


@bp.route("/clock/<name>/confirm", methods=["POST"])
@roles_required("admin")
def confirm(name: str) -> Response:
    s = db_session()
    try:
        clockwatch.confirm(s, name, request.form.get("reason", "").strip()[:MAX_REASON])
    except DomainError as exc:
        s.rollback()
        flash(f"Not confirmed: {exc.detail}", "error")
    else:
        flash(f"Clock confirmed: {name} acts again from its next run.", "ok")
    return redirect(url_for("clock_pages.clock"))
