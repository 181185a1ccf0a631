"""Equipment (SPEC §11, 21 CFR 211.182): the registry, the signed logbook (calibrated,
maintained, cleaned, out of service, back in service), the status computed from it, labels
and the use at the steps.

Installed as a domain (``gmp_mes.registry``), set up by ``init_app``; it sits below batches
and plugs into the step through ``gmp_mes.registry.step_requirements``.
"""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ("labels",)


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, pages, CLI commands, jobs and seams."""
