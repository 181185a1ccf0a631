"""The schedule API (SPEC §13): bookings, the patient timeline, the vein-to-vein report."""

from __future__ import annotations

from flask_smorest import Blueprint

blp = Blueprint("schedule_api", __name__, url_prefix="/api/v1",
                description="Room bookings, patient timelines and vein-to-vein time")
