"""The receipt step's identity check done by scanning the starting-material label on the
batch page (issue 13), in headless Chromium: the scanner types the label and Enter into
the step's scan field; the step is recorded with the scan and shows OK. Another
patient's bag is refused (coi_mismatch) and nothing is recorded."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

import processes.services as processes
from demo.seed import _step_values
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.signatures import SignatureInput
from tests.browser.conftest import log_in, screenshot
from tests.browser.test_batch_path import flash_text, payload, scan_into


def _as(db: Any, person: Any) -> Any:
    return db.transaction(actor=Actor(person.username, person.user_id, person.username))


def _received_bag(app: Any, db: Any, people: dict[str, Any], n: int) -> str:
    """A patient enrolled, collected at APH1, shipped and received at CLEAN1."""
    from gmp_mes.models import User
    from identity import services as identity

    with app.app_context():
        with _as(db, people["clinician"]) as s:
            coi_id = identity.enrol_patient(
                s, given_name="Rosa", family_name=f"Franklin{n}", date_of_birth=date(1970, 7, 25),
                mrn=f"MRN-R{n}", treatment_site="HOSP1").coi_id
        with _as(db, people["apheresis"]) as s:
            item_id = identity.record_collection(
                s, coi_id=coi_id, collected_at=utcnow() - timedelta(hours=3), site="APH1",
                volume_ml=200.0).item_id
            identity.record_custody(s, item_id, action="ship", site="CLEAN1",
                                    user=s.get(User, people["apheresis"].user_id))
        with _as(db, people["operator"]) as s:
            identity.record_custody(s, item_id, action="receive", site="CLEAN1",
                                    user=s.get(User, people["operator"].user_id))
    return item_id


@pytest.fixture
def people(app: Any, db: Any, make_site: Any, make_user: Any) -> dict[str, Any]:

    make_site("APH1", "collection")
    make_site("CLEAN1", "manufacturing")
    make_site("HOSP1", "treatment")
    found = {
        "clinician": make_user("clara", "clinician", site="HOSP1"),
        "apheresis": make_user("april", "clinician", site="APH1"),
        "operator": make_user("olga", "operator"),
        "operator2": make_user("omar", "operator"),
        "qa": make_user("quentin", "qa"),
    }
    with app.app_context(), _as(db, found["qa"]) as s:
        processes.load_process_definitions(s)
        processes.approve_process(s, "CART-AUTO", 1, user_id=found["qa"].user_id,
                                signature=SignatureInput(password=found["qa"].password,
                                                         meaning="approved"))
    return found


def form_kept(page: Any) -> bool:
    """Every value typed is back in the refused receipt form, the passwords are not."""
    form = page.locator("section#receipt > form.step-form")
    typed = all(form.locator(f"[name=v_{name}]").input_value() == (
        ("yes" if value else "no") if isinstance(value, bool) else str(value))
        for name, value in _step_values(1)["receipt"].items())
    return typed and form.get_by_label("Your password").input_value() == ""


def _fill_receipt(page: Any, people: dict[str, Any]) -> Any:
    form = page.locator("section#receipt > form.step-form")
    for name, value in _step_values(1)["receipt"].items():
        field = form.locator(f"[name=v_{name}]")
        if isinstance(value, bool):
            field.select_option("yes" if value else "no")
        else:
            field.fill(str(value))
    form.get_by_label("Your password").fill(people["operator"].password)
    form.get_by_label("Second person (verifier) user name").fill(people["operator2"].username)
    form.get_by_label("Verifier password").fill(people["operator2"].password)
    return form


@pytest.mark.requirement("SPEC §2 (chain of identity at receipt)")
def test_receipt_step_done_by_scanning_the_bag_shows_ok(
    page: Any, app: Any, db: Any, people: dict[str, Any]
) -> None:
    bag = _received_bag(app, db, people, 1)
    other_bag = _received_bag(app, db, people, 2)
    label, other_label = payload(app, db, bag), payload(app, db, other_bag)

    log_in(page, people["operator"])
    page.goto("/batches")
    # The Start batch field takes the scanned label (the scanner's Enter submits).
    scan_into(page, "input[name=item_id]", label)
    page.wait_for_url("**/batches/CART-*")
    number = page.url.rsplit("/", 1)[1].split("#")[0]

    # Another patient's bag scanned at receipt: refused, the step is not recorded.
    _fill_receipt(page, people)
    with page.expect_navigation():
        scan_into(page, "section#receipt > form.step-form input[name=scan]", other_label)
    # Issue 15: the refused form comes back at the step with its summary (focused).
    summary = page.locator("section#receipt .error-summary")
    refused = summary.inner_text()
    assert "scanned label is refused" in refused and "wrong patient" in refused, refused
    assert page.evaluate("document.activeElement.classList.contains('error-summary')")
    assert form_kept(page)
    assert page.locator("section#receipt .step-record").count() == 0
    screenshot(page, "receipt-scan-refused")

    # The right bag: recorded with the scan, which shows OK.
    _fill_receipt(page, people)
    with page.expect_navigation():
        scan_into(page, "section#receipt > form.step-form input[name=scan]", label)
    assert "step receipt recorded and signed; bag scanned: OK" in flash_text(page), \
        flash_text(page)
    shown = page.locator("section#receipt .step-scan")
    assert shown.locator(".scan-verdict").inner_text() == "OK"
    assert bag in shown.inner_text() and "in_process" in shown.inner_text()
    screenshot(page, "receipt-scan-ok")

    # At the scan station, the bag is OK against its batch and STOP against no other.
    page.goto("/scan")
    page.locator("summary", has_text="Check against a batch").click()
    page.locator("#batch_number").fill(number)
    scan_into(page, "#payload", label)
    assert page.locator(".verdict").first.inner_text() == "OK"
