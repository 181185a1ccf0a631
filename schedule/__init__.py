"""The schedule domain (SPEC §13, issue 19): room bookings planned from a process's
``[schedule]`` with lead-time warnings, the patient timeline and the vein-to-vein report.

Above rooms (a booking holds a manufacturing room) and qc (the release decision is a
milestone and the manufacturing failure rate counts rejections); it reads identity,
batches, qc, rooms and logistics only through their services. It draws on identity's
patient page and the batch page through the core's seams, never by being imported.

Installed as a domain (``gmp_mes.registry``) on the forecasts layer; set up by init_app.
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ("identity", "logistics", "batches", "qc", "rooms")


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, pages and the seams it provides."""
    from schedule import api as schedule_api
    from schedule import pages, services

    api.register_blueprint(schedule_api.blp)
    app.register_blueprint(pages.bp)
    # SPEC §13, §7b: the timeline on the patient page, the vein-to-vein report on /reports.
    from gmp_mes import registry

    registry.patient_sections.provide("timeline", pages.timeline_section)
    # SPEC §13 bookings: the batch a booked patient starts links to its booking; the
    # booking is in the batch's record and page, and on the patient page.
    registry.batch_started.provide("schedule", services.link_started_batch)
    registry.batch_record_sections.provide("schedule", services.batch_record_sections)
    registry.patient_sections.provide("bookings", pages.bookings_section)
    registry.add_nav(app, "schedule.schedule_page", "Schedule", group=registry.NavGroup.WORK)
    registry.add_report(app, "schedule.vein_to_vein_page", "Vein-to-vein time and "
                        "manufacturing failure", schedule_api.REPORT_ROLES)
