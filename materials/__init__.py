"""What touches the cells (SPEC §11): the material master, lots received, released or
rejected by QA, their labels, their use at the steps and the recall (where used).

Installed as a domain (``gmp_mes.registry``), set up by ``init_app``; it sits below batches
and plugs into the step through ``gmp_mes.registry.step_requirements``.
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ("labels", "identity")


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, pages, CLI commands, jobs and seams."""
