"""Chain of condition (SPEC §14): shipments of items between sites under a temperature
condition, their temperature logs (summary, excursions, gaps), receipt with
reconciliation, the hold an excursion or a missing log puts on the items and QA's signed
disposition.

Installed as a domain (``gmp_mes.registry``) between identity and batches: items and
custody stay identity's (reached through ``identity.services`` only); identity learns of
a hold through ``gmp_mes.registry.item_holds``, the batch record of the shipments through
``registry.batch_record_sections``.
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ("labels", "identity")


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, pages, nav entry and the seams it provides."""
    from gmp_mes import registry
    from gmp_mes.registry import NavGroup, add_dashboard_panel, add_nav
    from logistics import api as logistics_api
    from logistics import pages, services

    api.register_blueprint(logistics_api.blp)
    app.register_blueprint(pages.bp)
    add_dashboard_panel(app, pages.dashboard_panel)  # held and incoming shipments
    add_nav(app, "logistics.shipments_page", "Shipments", ("operator", "clinician", "qa", "qc"),
            group=NavGroup.FLOOR)
    # SPEC §14: a held shipment's items fail the bedside check and show at the scan station.
    registry.item_holds.provide("logistics", services.item_holds)
    registry.batch_record_sections.provide("logistics", services.batch_record_sections)
    # SPEC §14: custody move and receive place an item in a storage position.
    registry.storage_positions.provide("logistics", services.POSITIONS)
    add_nav(app, "logistics.storage_page", "Storage", ("operator", "clinician", "qa", "qc",
                                                       "admin"), group=NavGroup.FLOOR)
