"""Rooms, line clearance and environmental monitoring (SPEC §12; EU GMP Annex 1 (2022),
EU GMP Part IV §9.42-9.43).

Cleanrooms of a site with their grade (A cleanest to D), the occupancy log (which batch,
COI and step was in a room when), the two-person line clearance a room needs before it
serves another patient, and the environmental monitoring results judged against the
Annex 1 action limits of the room's grade, whose excursions open a deviation on every batch
they may affect.

Installed as a domain (``gmp_mes.registry``) above batches, a sibling of qc: the step check
reaches batches through ``gmp_mes.registry.step_requirements`` (owner ``room_grade``), the
batch record through ``batch_record_sections``; deviations are opened through
``batches.services``.
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ("batches",)


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, pages, jobs, panel and seams."""
    from gmp_mes import registry
    from gmp_mes.registry import NavGroup, add_dashboard_panel, add_job, add_nav, add_search
    from rooms import api as rooms_api
    from rooms import pages, services, sweep

    api.register_blueprint(rooms_api.blp)
    app.register_blueprint(pages.bp)
    add_nav(app, "rooms.room_list", "Rooms", ("operator", "qa", "qc", "admin"),
            group=NavGroup.WORK)
    add_search(app, pages.search_target)  # the header box: a room code
    add_job(app, sweep.job)  # excursions reach batches recorded after the entry
    add_dashboard_panel(app, pages.dashboard_panel)
    # SPEC §12: the room's grade and the line clearance are checked at the step, with
    # every other reason; the use is logged.
    registry.step_requirements.provide("room_grade", services.check_step_room)
    registry.batch_record_sections.provide("rooms", services.batch_record_sections)
