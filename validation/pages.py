"""Admin page: the last installation qualification, and a button to run it again."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, url_for
from werkzeug.wrappers import Response

from gmp_mes.http import database, db_session, roles_required
from validation import iq

bp = Blueprint("validation", __name__, url_prefix="/admin/validation",
               template_folder="templates")


@bp.route("/iq")
@roles_required("admin")
def iq_page() -> str:
    return render_template("validation/iq.html",
                           stored=iq.last_record(current_app.config["GMP_SETTINGS"]))


@bp.route("/iq", methods=["POST"])
@roles_required("admin")
def run_iq() -> Response:
    settings = current_app.config["GMP_SETTINGS"]
    checks = iq.run_checks(settings, database().engine)
    record = iq.build_record(checks, settings, g.user.username)
    path, _ = iq.save_record(record, settings)
    if next(c for c in checks if c.name == "schema at head").ok:
        iq.audit_run(db_session(), path, record)
    failed = [c.name for c in checks if not c.ok]
    if failed:
        flash(f"Installation qualification FAILED: {', '.join(failed)}.", "error")
    else:
        flash("Installation qualification passed.", "ok")
    return redirect(url_for("validation.iq_page"))
