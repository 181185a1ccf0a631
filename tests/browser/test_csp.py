"""The pages pass their Content-Security-Policy in Chromium (issue 14): on the demo
data, every page of the navigation for every role, a batch record, an item, a lot, a
piece of equipment and a
patient load without one CSP violation, and the page scripts still run (the scan
input keeps focus, the batch list's status filter submits itself)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from demo.seed import Summary
from tests.browser.test_demo_pages import (  # noqa: F401 (fixtures)
    bags_of,
    batch_of,
    database_url,
    sign_in,
)
from tests.browser.test_demo_pages import demo as demo

# Runs before any page script and is not subject to the page's CSP.
COLLECT = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " " +
                    (e.sourceFile || "") + ":" + e.lineNumber);
});
"""


def visit(page: Any, path: str, problems: list[str], console: list[str], *, refusal: bool) -> None:
    response = page.goto(path)
    limit = 404 if refusal else 400  # a page of another role: its refusal page too
    assert response is not None and response.status < limit, (path, response and response.status)
    assert "script-src 'self' 'nonce-" in response.headers["content-security-policy"]
    page.wait_for_load_state("load")
    problems.extend(f"{path}: {v}" for v in page.evaluate("window.__csp"))
    problems.extend(f"{path}: {m}" for m in console)
    console.clear()


def _first_lot_and_equipment(db: Any) -> tuple[str, str]:
    """A demo lot and piece of equipment: their detail pages are reached from lists."""
    with db.engine.connect() as connection:
        lot = connection.scalar(text("SELECT lot_id FROM material_lot ORDER BY lot_id"))
        equipment = connection.scalar(
            text("SELECT equipment_id FROM equipment ORDER BY equipment_id"))
    assert lot and equipment, "the demo seeds lots and equipment"
    return lot, equipment


@pytest.mark.parametrize("username", ["operator", "qc", "qa", "clinician", "admin"])
def test_every_page_passes_its_csp(browser: Any, live_server: str, app: Any, db: Any,
                                   demo: Summary, username: str) -> None:
    context = browser.new_context(base_url=live_server)
    context.add_init_script(COLLECT)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text)
            if "Content Security Policy" in m.text or "Content-Security-Policy" in m.text else None)
    problems: list[str] = []
    try:
        sign_in(page, username)
        problems.extend(f"/: {v}" for v in page.evaluate("window.__csp"))
        paths = {page.eval_on_selector(f"nav a >> nth={i}", "a => a.pathname")
                 for i in range(page.locator("nav a").count())}
        batch = batch_of(demo, "on_hold")
        item = bags_of(app, db, batch_of(demo, "thawed"))[0].item_id
        coi = next(iter(demo.patients))
        lot, equipment = _first_lot_and_equipment(db)
        extra = {f"/batches/{batch}", f"/items/{item}", f"/patients/{coi}", f"/qc/{batch}",
                 f"/lots/{lot}", f"/equipment/{equipment}",
                 "/alerts", "/audit", "/processes", "/labels", "/bedside", "/collections/new",
                 "/patients/new", "/qa/release", "/admin/users", "/admin/sites"} - paths
        for path in sorted(paths | extra):
            visit(page, path, problems, console, refusal=path in extra)
        assert not problems, problems
        if "/scan" in paths:  # the nonce'd scan script runs: it focuses the scan input
            page.goto("/scan")
            page.wait_for_function("document.activeElement && document.activeElement.id")
            assert page.evaluate("document.activeElement.id") == "payload"
        if "/batches" in paths:  # gmp.js submits the status filter on change
            page.goto("/batches")
            select = page.locator("select[name=status]")
            if select.count():
                with page.expect_navigation():
                    select.select_option(index=1)
                assert "status=" in page.url
    finally:
        context.close()
