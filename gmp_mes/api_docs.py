"""``/api/v1/docs`` (SPEC §7b): the OpenAPI document made readable with Swagger UI,
whose JavaScript and CSS come from the ``swagger-ui-bundle`` package (no CDN: a
cleanroom network often has no internet, and a script from elsewhere could read a
logged-in page). The page has no inline script, so the application's
Content-Security-Policy (``script-src 'self'``) holds unchanged.

Public like ``/api/v1/openapi.json``: it documents the contract, never data."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, render_template, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path
from werkzeug.wrappers import Response

bp = Blueprint("api_docs", __name__, url_prefix="/api/v1/docs", template_folder="templates")

# The files the page loads; nothing else of the package is served.
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js",
                    "swagger-ui-standalone-preset.js", "favicon-32x32.png",
                    "favicon-16x16.png"})


@bp.route("")
def docs() -> str:
    return render_template("api_docs.html", spec_url=url_for("api-docs.openapi_json"))


@bp.route("/assets/<path:filename>")
def asset(filename: str) -> Response:
    if filename not in ASSETS:
        abort(404)
    response = send_from_directory(Path(str(swagger_ui_path)), filename, max_age=86400)
    return response
