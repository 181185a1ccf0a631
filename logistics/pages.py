"""Pages of the logistics domain (placeholder replaced below)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("logistics", __name__, template_folder="templates")


@bp.route("/shipments")
def shipments_page() -> str:
    return ""
