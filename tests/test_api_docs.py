"""/api/v1/docs (SPEC §7b): Swagger UI served from the package, under the app's CSP."""

from __future__ import annotations

import json
import re


def test_docs_page_loads_its_assets_from_the_application(client) -> None:
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(s.startswith("/") for s in sources), sources  # no CDN
    assert "<script>" not in html  # no inline script: the CSP refuses it
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self' 'nonce-" in csp and "unsafe-inline" not in csp
    for src in re.findall(r'<script src="([^"]+)"', html):
        with client.get(src) as asset:
            assert asset.status_code == 200 and len(asset.data) > 100, src
    with client.get("/api/v1/docs/assets/swagger-ui-bundle.js") as bundle:
        assert b"SwaggerUIBundle" in bundle.data
    assert 'data-spec-url="/api/v1/openapi.json"' in html


def test_docs_serve_only_the_listed_assets(client) -> None:
    assert client.get("/api/v1/docs/assets/index.html").status_code == 404
    assert client.get("/api/v1/docs/assets/../__init__.py").status_code == 404


def test_openapi_document_is_the_committed_contract(client) -> None:
    """The API clients rely on (SPEC §7) does not change by accident: a refactor leaves the
    OpenAPI document as committed; an intended change is committed with
    ``python -m tests.api_baseline.openapi_dump`` in the same change."""
    from tests.api_baseline.openapi_dump import SNAPSHOT, comparable

    live = comparable(client.get("/api/v1/openapi.json").get_json())
    committed = json.loads(SNAPSHOT.read_text())
    changed = sorted(set(live["paths"]) ^ set(committed["paths"]))
    assert not changed, f"paths added or removed: {changed}"
    assert live == committed, ("the OpenAPI document differs from tests/api_baseline/"
                               "openapi.json; regenerate it if the change is intended")
