"""The identity domain: registered by the application factory through init_app."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, pages, CLI commands and jobs."""
