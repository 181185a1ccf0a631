"""The main pages in Chromium on the `gmp-mes demo` data set (issue 9): dashboards per
role, scan OK/STOP, bedside MATCH and DO NOT INFUSE with every reason, a release refused
with the missing conditions shown, batch record, item, alerts, audit, admin; tablet width
and keyboard-only use. Each main page is saved as a screenshot under tests/artifacts/.

The data is seeded through the services (demo.seed); every action below goes through
the pages. The test process only reads what a person would read off a label or page.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from demo.seed import DEMO_PASSWORD, QC_VALUES, Summary
from gmp_mes.audit import Actor
from tests.browser.conftest import screenshot, submit
from tests.browser.test_batch_path import flash_text, payload, scan_into, verdict
from tests.conftest import Person

TABLET = {"width": 800, "height": 1280}


@pytest.fixture
def database_url(seeded: tuple[Path, Summary], tmp_path: Path) -> str:
    """A fresh copy of the seeded demo database for each test (SQLite, as the harness)."""
    target = tmp_path / "demo.sqlite"
    shutil.copyfile(seeded[0], target)
    return f"sqlite:///{target}"


@pytest.fixture
def demo(seeded: tuple[Path, Summary], app: Any) -> Summary:
    return seeded[1]


def who(username: str) -> Person:
    return Person(username, DEMO_PASSWORD, (), "", 0)


def sign_in(page: Any, username: str) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")


def batch_of(summary: Summary, scenario: str) -> str:
    return next(number for number, s in summary.batches.items() if s == scenario)


def patient_of(app: Any, db: Any, summary: Summary, scenario: str) -> Any:
    from identity import services as identity

    coi = next(c for c, s in summary.patients.items() if s == scenario)
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        patient = identity.get_patient(s, coi)
        s.expunge(patient)
        return patient


def bags_of(app: Any, db: Any, batch_number: str) -> list[Any]:
    from identity import services as identity

    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        items = identity.items_of_batch(s, batch_number)
        for item in items:
            s.expunge(item)
        return [i for i in items if i.kind == "final_product"]


def no_horizontal_scroll(page: Any) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


@pytest.mark.parametrize("username, panel", [
    ("operator", "Items at CLEAN-1"),
    ("qc", "QC pending"),
    ("qa", "Batches awaiting release"),
    ("clinician", "Items at HOSP-NORTH"),
    ("admin", None),
])
def test_dashboard_per_role_on_demo_data(page: Any, demo: Summary, username: str,
                                         panel: str | None) -> None:
    sign_in(page, username)
    assert page.get_by_role("heading", name="Dashboard").is_visible()
    if panel:
        assert page.get_by_role("heading", name=panel).is_visible()
    screenshot(page, f"demo-dashboard-{username}")


def focused_id(page: Any) -> str:
    """The id of the focused element, once autofocus has placed it (after the load)."""
    page.wait_for_function("document.activeElement && document.activeElement.id")
    return page.evaluate("document.activeElement.id")


def test_scan_station_ok_and_stop_for_a_forged_label(page: Any, app: Any, db: Any,
                                                     demo: Summary) -> None:
    bag = bags_of(app, db, batch_of(demo, "released_in_storage"))[1]  # still in LN2
    sign_in(page, "operator")
    page.goto("/scan")
    # The input has the focus on arrival: the scanner just types.
    assert focused_id(page) == "payload"
    genuine = payload(app, db, bag.item_id)
    scan_into(page, "#payload", genuine)
    assert verdict(page) == "OK", verdict(page)
    screenshot(page, "scan-ok")
    # Next scan without touching the mouse: a label with one changed signature character.
    head, _, signature = genuine.rpartition(":")
    forged = f"{head}:{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    assert focused_id(page) == "payload"
    page.keyboard.type(forged)
    page.keyboard.press("Enter")
    shown = verdict(page)
    assert shown.startswith("STOP | ") and "bad_signature" in shown, shown
    screenshot(page, "scan-stop")


def test_bedside_match_and_do_not_infuse_with_every_reason(page: Any, app: Any, db: Any,
                                                           demo: Summary) -> None:
    thawed_bag = bags_of(app, db, batch_of(demo, "thawed"))[0]
    owner = patient_of(app, db, demo, "thawed")
    other = patient_of(app, db, demo, "in_process_expansion")  # also at HOSP-SOUTH
    sign_in(page, "clinician2")
    page.goto("/bedside")
    scan_into(page, "#patient_payload", payload(app, db, owner.wristband_item_id))
    page.keyboard.type(payload(app, db, thawed_bag.item_id))
    page.keyboard.press("Enter")
    assert verdict(page) == "MATCH", verdict(page)
    assert owner.family_name.upper() in page.locator("main").inner_text()
    screenshot(page, "bedside-match")

    page.goto("/bedside")
    scan_into(page, "#patient_payload", payload(app, db, other.wristband_item_id))
    page.keyboard.type(payload(app, db, thawed_bag.item_id))
    page.keyboard.press("Enter")
    shown = verdict(page)
    assert shown.startswith("DO NOT INFUSE | ") and "coi_mismatch" in shown, shown
    assert page.get_by_role("button", name="Sign and record administration").count() == 0
    screenshot(page, "bedside-do-not-infuse")

    # The bag administered at North: already administered AND not at this site, both shown.
    administered = bags_of(app, db, batch_of(demo, "administered"))[0]
    north_patient = patient_of(app, db, demo, "administered")
    page.goto("/bedside")
    scan_into(page, "#patient_payload", payload(app, db, north_patient.wristband_item_id))
    page.keyboard.type(payload(app, db, administered.item_id))
    page.keyboard.press("Enter")
    shown = verdict(page)
    assert "already_administered" in shown and "wrong_site" in shown, shown


def test_release_refused_with_the_missing_conditions_shown(browser: Any, live_server: str,
                                                           page: Any, demo: Summary) -> None:
    waiting = batch_of(demo, "awaiting_release")
    held = batch_of(demo, "on_hold")
    sign_in(page, "qa")
    page.goto("/qa/release")
    entry = page.locator(f"#b-{waiting}")
    missing = entry.locator("ul.problems").inner_text()
    assert "qc incomplete" in missing and "potency" in missing, missing
    assert entry.get_by_role("button", name="Release", exact=True).count() == 0
    assert "open deviation" in page.locator(f"#b-{held}").locator("ul.problems").inner_text()
    screenshot(page, "qa-release-queue")

    # QC completes the results: the batch becomes releasable on QA's screen ...
    qc = browser.new_context(base_url=live_server)
    qc_page = qc.new_page()
    sign_in(qc_page, "qc")
    qc_page.goto(f"/qc/{waiting}")
    for test in ("sterility", "potency", "vector_copy_number"):
        value = QC_VALUES[test]
        form = qc_page.locator("form.qc-entry")
        form.locator("select[name=test]").select_option(test)
        if isinstance(value, str):  # qualitative: chosen, never typed (issue 13)
            form.locator("select[name=outcome]").select_option(value)
        else:
            form.locator("input[name=value]").fill(str(value))
        form.get_by_label("Your password").fill(DEMO_PASSWORD)
        submit(qc_page, form.get_by_role("button", name="Record result"))
        assert f"{test}: PASS" in flash_text(qc_page), flash_text(qc_page)
    page.reload()
    entry = page.locator(f"#b-{waiting}")
    assert entry.get_by_text("All release conditions are met.").is_visible()

    # ... but while QA reads, an operator reports a major deviation on the batch.
    operator = browser.new_context(base_url=live_server)
    op_page = operator.new_page()
    sign_in(op_page, "operator")
    op_page.goto(f"/batches/{waiting}")
    op_page.get_by_text("Report a deviation").click()
    report = op_page.locator("form", has=op_page.get_by_role("button", name="Report deviation"))
    report.locator("select[name=severity]").select_option("major")
    report.locator("[name=description]").fill("Bag 2 label smudged during cryostorage check")
    submit(op_page, report.get_by_role("button", name="Report deviation"))
    assert "on hold" in op_page.locator("h1").inner_text()
    operator.close()
    qc.close()

    # QA signs on the stale page: refused, every missing condition named.
    release = entry.locator("form", has=page.locator("input[value=release]"))
    release.get_by_label("Your password").fill(DEMO_PASSWORD)
    submit(page, release.get_by_role("button", name="Release"))
    # Issue 15: the refusal comes back at the batch's entry, focused, not as a flash.
    refused = page.locator(f"#b-{waiting} .error-summary").inner_text()
    assert f"batch {waiting} cannot be released" in refused, refused
    assert "open major or critical deviation" in refused, refused
    screenshot(page, "release-refused")


def test_record_item_alerts_audit_and_admin_pages(page: Any, app: Any, db: Any,
                                                  demo: Summary) -> None:
    held = batch_of(demo, "on_hold")
    sign_in(page, "qa")
    page.goto(f"/batches/{held}")
    assert "on hold" in page.locator("h1").inner_text()
    assert "Controlled-rate freezer door alarm" in page.locator("main").inner_text()
    screenshot(page, "batch-record-on-hold")
    thawed_bag = bags_of(app, db, batch_of(demo, "thawed"))[0]
    page.goto(f"/items/{thawed_bag.item_id}")
    assert "thawed" in page.locator("h1").inner_text()
    screenshot(page, "item")
    page.goto("/alerts")
    assert "forged or altered label" in page.locator("main").inner_text()
    screenshot(page, "alerts")
    page.goto("/audit")
    screenshot(page, "audit")

    sign_in(page, "admin")
    page.goto("/admin/users")
    assert page.locator("tr[data-username=qa2]").is_visible()
    screenshot(page, "admin-users")
    page.goto("/admin/sites")
    assert page.locator("tr[data-site=HOSP-SOUTH]").is_visible()
    screenshot(page, "admin-sites")


def test_admin_creates_a_user_who_then_logs_in(page: Any, demo: Summary) -> None:
    sign_in(page, "admin")
    page.goto("/admin/users")
    page.get_by_role("link", name="New user").click()
    page.get_by_label("User name").fill("Nora")
    page.get_by_label("Printed name (shown on signatures)").fill("Nora Nurse")
    page.get_by_label("clinician").check()
    page.get_by_label("Site").select_option("HOSP-NORTH")
    page.get_by_label("Initial password", exact=True).fill("short")
    page.get_by_label("Initial password again").fill("short")
    submit(page, page.get_by_role("button", name="Create user"))
    # The service's field error appears next to the password field.
    assert "at least 12" in page.locator("#password-error").inner_text()
    screenshot(page, "admin-user-errors")
    page.get_by_label("Initial password", exact=True).fill("harbour-violet-22")
    page.get_by_label("Initial password again").fill("harbour-violet-22")
    submit(page, page.get_by_role("button", name="Create user"))
    assert "User nora created" in flash_text(page)
    page.goto("/login")
    page.get_by_label("User name").fill("nora")
    page.get_by_label("Password").fill("harbour-violet-22")
    page.get_by_role("button", name="Log in").click()
    # 21 CFR 11.300(b): the password the admin chose is one-time: Nora sets her own.
    page.wait_for_url("**/account/password*")
    page.get_by_label("Current password (or the one-time password you were given)").fill(
        "harbour-violet-22")
    page.get_by_label("New password", exact=True).fill("lantern-meadow-quiet")
    page.get_by_label("New password again").fill("lantern-meadow-quiet")
    page.get_by_role("button", name="Change password").click()
    page.wait_for_url("**/login*")
    page.get_by_label("User name").fill("nora")
    page.get_by_label("Password").fill("lantern-meadow-quiet")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")
    assert "Nora Nurse" in page.locator(".who").inner_text()


@pytest.mark.parametrize("username, path", [
    ("operator", "/scan"), ("clinician2", "/bedside"), ("qa", "/qa/release"),
    ("operator", "/batches"), ("qc", "/qc"), ("admin", "/admin/users"), ("qa", "/alerts"),
])
def test_tablet_width_has_no_sideways_scrolling(browser: Any, live_server: str,
                                                demo: Summary, username: str,
                                                path: str) -> None:
    context = browser.new_context(base_url=live_server, viewport=TABLET, has_touch=True)
    tablet = context.new_page()
    try:
        sign_in(tablet, username)
        tablet.goto(path)
        assert no_horizontal_scroll(tablet), f"{path} scrolls sideways at 800 px"
        # Touch targets: every button at least 44 px high (WCAG 2.5.5).
        small = tablet.evaluate("""() => [...document.querySelectorAll('main button')]
            .filter(b => b.offsetParent !== null && b.getBoundingClientRect().height < 44)
            .map(b => b.innerText)""")
        assert not small, f"buttons under 44 px on {path}: {small}"
        screenshot(tablet, f"tablet{re.sub('[^a-z]+', '-', path)}")
    finally:
        context.close()


def test_keyboard_only_login_and_bedside_administration(page: Any, app: Any, db: Any,
                                                        demo: Summary) -> None:
    bag = bags_of(app, db, batch_of(demo, "thawed"))[0]
    owner = patient_of(app, db, demo, "thawed")
    page.goto("/login")
    assert focused_id(page) == "username"
    page.keyboard.type("clinician2")
    page.keyboard.press("Tab")
    page.keyboard.type(DEMO_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/")
    page.goto("/bedside")
    page.wait_for_function("document.activeElement && document.activeElement.id")
    assert page.evaluate("document.activeElement.id") == "patient_payload"
    page.keyboard.type(payload(app, db, owner.wristband_item_id))
    page.keyboard.press("Enter")
    page.keyboard.type(payload(app, db, bag.item_id))
    page.keyboard.press("Enter")
    assert verdict(page) == "MATCH", verdict(page)
    # Tab to the signature: the focus is always visible (outline) on the way.
    for _ in range(40):
        if page.evaluate("document.activeElement.id") == "password":
            break
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.tagName") != "BODY":
            outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert outline != "none", page.evaluate("document.activeElement.outerHTML")
    assert page.evaluate("document.activeElement.id") == "password"
    page.keyboard.type(DEMO_PASSWORD)
    page.keyboard.press("Enter")
    assert verdict(page) == "ADMINISTERED", verdict(page)
