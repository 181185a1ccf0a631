"""The application the scan benchmark serves: gmp-mes plus the raw-SQL reference route
(bench/reference_route.py), for ``gunicorn 'bench.reference_app:create_app()'`` run from
the repository root. Never part of an installation: ``bench`` is not a shipped package."""

from __future__ import annotations

from typing import Any

from flask import Flask

import gmp_mes
from bench import reference_route


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = gmp_mes.create_app(test_config)
    app.register_blueprint(reference_route.bp)
    return app
