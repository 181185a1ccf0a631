"""``gmp-mes demo``: seed a realistic demonstration data set (SPEC §8).

Registered by the application factory (the composition root); the data is
created only through the domains' service functions, so every rule, audit
event and signature of a real installation applies to it.
"""

from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    from demo.seed import demo_command

    app.cli.add_command(demo_command)
