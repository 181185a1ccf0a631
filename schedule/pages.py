"""Pages of the schedule domain (SPEC §13): ``/schedule`` and the vein-to-vein report."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("schedule", __name__, template_folder="templates")
