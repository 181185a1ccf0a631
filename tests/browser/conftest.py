"""Browser fixtures: the app served on a free local port, driven by Debian's
headless Chromium through Playwright (no browser download ever)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "browser" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, templates: Any) -> Iterator[str]:
    """Browser tests run on SQLite only: the pages are the same on both databases,
    whose behaviour the API and service tests already cover."""
    url = templates.sqlite()
    yield url


@pytest.fixture(scope="session")
def seeded(templates: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The demo data set, seeded once per run (seeding signs ~130 records); the demo
    tests (test_demo_pages, test_csp) each get a fresh copy of its file."""
    from demo.seed import Summary, seed
    from gmp_mes import create_app
    from labels.keys import ensure_key

    url = templates.sqlite()
    app = create_app({"database_url": url, "secret_key": "demo-template",
                      "instance_path": str(tmp_path_factory.mktemp("demo-instance")),
                      "facility_id": "A9999", "timezone": "Europe/Berlin"})
    ensure_key(app.config["GMP_SETTINGS"].signing_key)
    with app.app_context():
        summary = seed(app)
    app.extensions["gmp_mes.db"].dispose()
    assert isinstance(summary, Summary), summary
    return Path(url.removeprefix("sqlite:///")), summary


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any, live_server: str) -> Iterator[Any]:
    context = browser.new_context(base_url=live_server, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    yield tab
    context.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def submit(page: Any, control: Any) -> None:
    """Click a control that loads a new page and wait until that page has loaded.

    A bare ``click()`` returns once the navigation has started; reading the page then
    (``count()``, ``all_inner_texts()``, ``content()``) can see the old page or a blank
    one on a loaded machine. Every click that posts a form goes through here."""
    with page.expect_navigation():
        control.click()


def log_in(page: Any, person: Any) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill(person.username)
    page.get_by_label("Password").fill(person.password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")


def console_errors(page: Any) -> list[str]:
    """The page's console errors from now on (Chromium asks for /favicon.ico, which the
    app does not serve: not a page problem)."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text)
            if m.type == "error" and "favicon" not in (m.location or {}).get("url", "")
            else None)
    return errors
