"""``gmp-mes demo``: seed a realistic demonstration data set (SPEC §8).

Installed like a domain (an entry point, ``gmp_mes.registry``); the data is
created only through the domains' service functions, so every rule, audit
event and signature of a real installation applies to it.
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = (
    "batches", "equipment", "identity", "labels", "logistics", "materials", "processes", "qc",
    "rooms", "schedule", "training",
)


def init_app(app: Flask, api: Api) -> None:
    from demo.seed import demo_command

    app.cli.add_command(demo_command)
