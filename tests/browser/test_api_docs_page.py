"""/api/v1/docs in Chromium: Swagger UI renders the OpenAPI document from the package's
assets, with no CSP violation and no request to another host."""

from __future__ import annotations

from urllib.parse import urlparse

from tests.browser.conftest import screenshot


def test_api_docs_render_under_the_csp(page, live_server) -> None:
    problems: list[str] = []
    hosts: set[str] = set()
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: hosts.add(urlparse(r.url).netloc))
    page.goto("/api/v1/docs")
    page.wait_for_selector(".opblock-tag", timeout=20_000)
    assert page.locator(".info .title").inner_text().startswith("gmp-mes")
    assert page.locator(".opblock-tag", has_text="alerts").count() >= 1
    assert page.locator(".opblock").count() > 20  # every operation listed
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
    assert hosts == {urlparse(live_server).netloc}, hosts
    screenshot(page, "api-docs")
