"""Forms that keep state, in Chromium (issue 15 "Done when"): a wrong verifier password
keeps every typed value and says it was the verifier's; a typo in a collection form
keeps the rest; Back after a scan does not post the scan again."""

from __future__ import annotations

from typing import Any

from demo.seed import _step_values
from tests.browser.conftest import log_in, screenshot, submit
from tests.browser.test_batch_path import payload, scan_into
from tests.browser.test_receipt_scan import _received_bag, people  # noqa: F401
from tests.helpers import count


def test_wrong_verifier_password_keeps_every_value(page: Any, app: Any, db: Any,
                                                   people: dict[str, Any]) -> None:  # noqa: F811
    bag = _received_bag(app, db, people, 1)
    log_in(page, people["operator"])
    page.goto("/batches")
    scan_into(page, "input[name=item_id]", payload(app, db, bag))
    page.wait_for_url("**/batches/CART-*")
    form = page.locator("section#receipt > form.step-form")
    values = _step_values(1)["receipt"]
    for name, value in values.items():
        field = form.locator(f"[name=v_{name}]")
        if isinstance(value, bool):
            field.select_option("yes" if value else "no")
        else:
            field.fill(str(value))
    form.get_by_label("Your password").fill(people["operator"].password)
    form.get_by_label("Second person (verifier) user name").fill(people["operator2"].username)
    form.get_by_label("Verifier password").fill("not-the-verifiers-password")
    with page.expect_navigation():
        form.get_by_role("button", name="Sign and record").click()
    summary = page.locator("section#receipt .error-summary")
    assert "The verifier's signature failed" in summary.inner_text()
    assert page.evaluate("document.activeElement.classList.contains('error-summary')")
    field_message = form.locator("fieldset.signature .field-error").inner_text()
    assert "verifier's user name or password was not accepted" in field_message
    for name, value in values.items():
        expected = ("yes" if value else "no") if isinstance(value, bool) else str(value)
        assert form.locator(f"[name=v_{name}]").input_value() == expected, name
    verifier = form.get_by_label("Second person (verifier) user name")
    assert verifier.input_value() == people["operator2"].username
    assert form.get_by_label("Your password").input_value() == ""
    assert form.get_by_label("Verifier password").input_value() == ""
    assert "performer" not in summary.inner_text()  # the performer's password was right
    screenshot(page, "step-form-verifier-refused")
    # Only the passwords are typed again.
    form.get_by_label("Your password").fill(people["operator"].password)
    form.get_by_label("Verifier password").fill(people["operator2"].password)
    with page.expect_navigation():
        form.get_by_role("button", name="Sign and record").click()
    assert "step receipt recorded and signed" in page.locator("p.flash").first.inner_text()


def test_collection_typo_keeps_the_rest(page: Any, app: Any, db: Any,
                                        people: dict[str, Any]) -> None:  # noqa: F811
    from identity import services as identity
    from tests.browser.test_receipt_scan import _as

    with app.app_context(), _as(db, people["clinician"]) as s:
        from datetime import date

        coi = identity.enrol_patient(s, given_name="Ada", family_name="Byron",
                                     date_of_birth=date(1980, 1, 2), mrn="MRN-C1",
                                     treatment_site="HOSP1").coi_id
    log_in(page, people["apheresis"])
    page.goto("/collections/new")
    page.get_by_label("Patient COI ID (14 characters)").fill(coi)
    page.get_by_label("Collected at (local time)").fill("2026-12-01T08:30")
    page.get_by_label("Volume (mL)").fill("25O")  # a letter O typed for a zero
    submit(page, page.get_by_role("button", name="Record collection"))
    summary = page.locator(".error-summary")
    assert "Volume (mL)" in summary.inner_text()
    assert page.evaluate("document.activeElement.classList.contains('error-summary')")
    assert page.locator("#volume_ml-error").is_visible()
    assert page.get_by_label("Patient COI ID (14 characters)").input_value() == coi
    assert page.get_by_label("Collected at (local time)").input_value() == "2026-12-01T08:30"
    assert page.get_by_label("Volume (mL)").input_value() == "25O"
    screenshot(page, "collection-typo-kept")
    page.get_by_label("Volume (mL)").fill("250.5")  # the ISO point, at every site
    page.get_by_role("button", name="Record collection").click()
    page.wait_for_url("**/items/ITM-*")
    assert "250.5" in page.content()


def test_back_after_a_scan_does_not_post_again(page: Any, app: Any, db: Any,
                                               people: dict[str, Any]) -> None:  # noqa: F811
    bag = _received_bag(app, db, people, 3)
    label = payload(app, db, bag)
    log_in(page, people["operator"])
    page.goto("/")
    page.goto("/scan")
    before = count(db, "custody_event")
    scan_into(page, "#payload", label)
    page.wait_for_load_state()
    assert page.locator(".verdict").first.inner_text() == "OK"
    assert page.url.endswith("/scan") or "/scan?" in page.url
    assert count(db, "custody_event") == before + 1
    resubmission: list[str] = []
    page.on("dialog", lambda d: (resubmission.append(d.message), d.dismiss()))
    page.go_back()
    page.wait_for_load_state()
    page.go_forward()
    page.wait_for_load_state()
    page.reload()
    page.wait_for_load_state()
    assert not resubmission
    assert count(db, "custody_event") == before + 1  # the scan was recorded once
    screenshot(page, "scan-after-back-and-reload")


def test_back_after_bedside_verify_does_not_post_again(page: Any, app: Any, db: Any,
                                                       people: dict[str, Any]) -> None:  # noqa: F811
    from sqlalchemy import select

    from identity.models import Item, Patient
    from tests.browser.test_batch_path import verdict

    bag = _received_bag(app, db, people, 4)  # at CLEAN1: not infusible at HOSP1
    with app.app_context(), db.transaction() as s:
        coi_id = s.scalar(select(Item.coi_id).where(Item.item_id == bag))
        wristband = s.scalar(select(Patient.wristband_item_id).where(Patient.coi_id == coi_id))
    log_in(page, people["clinician"])
    page.goto("/")
    page.goto("/bedside")
    before = count(db, "bedside_verification")
    scan_into(page, "#patient_payload", payload(app, db, wristband))
    page.keyboard.type(payload(app, db, bag))
    page.keyboard.press("Enter")
    page.wait_for_load_state()
    assert verdict(page).startswith("DO NOT INFUSE")
    assert page.url.endswith("/bedside")  # the verdict is shown by a GET
    assert count(db, "bedside_verification") == before + 1
    resubmission: list[str] = []
    page.on("dialog", lambda d: (resubmission.append(d.message), d.dismiss()))
    page.go_back()
    page.wait_for_load_state()
    page.go_forward()
    page.wait_for_load_state()
    page.reload()
    page.wait_for_load_state()
    assert not resubmission
    assert count(db, "bedside_verification") == before + 1  # the check was recorded once
    screenshot(page, "bedside-after-back-and-reload")


def test_wrong_verifier_password_on_a_correction_keeps_every_value(
        page: Any, app: Any, db: Any, people: dict[str, Any]) -> None:  # noqa: F811
    bag = _received_bag(app, db, people, 5)
    log_in(page, people["operator"])
    page.goto("/batches")
    scan_into(page, "input[name=item_id]", payload(app, db, bag))
    page.wait_for_url("**/batches/CART-*")
    form = page.locator("section#receipt > form.step-form")
    values = _step_values(1)["receipt"]
    for name, value in values.items():
        field = form.locator(f"[name=v_{name}]")
        if isinstance(value, bool):
            field.select_option("yes" if value else "no")
        else:
            field.fill(str(value))
    form.get_by_label("Your password").fill(people["operator"].password)
    form.get_by_label("Second person (verifier) user name").fill(people["operator2"].username)
    form.get_by_label("Verifier password").fill(people["operator2"].password)
    with page.expect_navigation():
        form.get_by_role("button", name="Sign and record").click()
    assert "step receipt recorded and signed" in page.locator("p.flash").first.inner_text()
    before = count(db, "audit_event")
    section = page.locator("section#receipt")
    section.locator("summary", has_text="Correct this record").click()
    fix = section.locator("details form.step-form")
    typed: dict[str, str] = {}
    for name, value in values.items():
        field = fix.locator(f"[name=v_{name}]")
        if isinstance(value, bool):
            typed[name] = "no" if value else "yes"
            field.select_option(typed[name])
        else:
            typed[name] = f"{value}1" if isinstance(value, int | float) else f"{value} fixed"
            field.fill(typed[name])
    fix.get_by_label("Reason for the correction").fill("transcription error on the sheet")
    fix.get_by_label("Your password").fill(people["operator"].password)
    fix.get_by_label("Second person (verifier) user name").fill(people["operator2"].username)
    fix.get_by_label("Verifier password").fill("not-the-verifiers-password")
    with page.expect_navigation():
        fix.get_by_role("button", name="Sign correction").click()
    fix = page.locator("section#receipt details form.step-form")
    summary = fix.locator(".error-summary")
    assert "The verifier's signature failed" in summary.inner_text()
    assert page.evaluate("document.activeElement.classList.contains('error-summary')")
    assert "verifier's user name or password was not accepted" in fix.locator(
        "fieldset.signature .field-error").inner_text()
    for name, value in typed.items():
        assert fix.locator(f"[name=v_{name}]").input_value() == value, name
    assert fix.get_by_label("Reason for the correction").input_value() == \
        "transcription error on the sheet"
    assert fix.get_by_label("Second person (verifier) user name").input_value() == \
        people["operator2"].username
    assert fix.get_by_label("Your password").input_value() == ""
    assert fix.get_by_label("Verifier password").input_value() == ""
    assert "performer" not in summary.inner_text()
    screenshot(page, "correction-form-verifier-refused")
    fix.get_by_label("Your password").fill(people["operator"].password)
    fix.get_by_label("Verifier password").fill(people["operator2"].password)
    with page.expect_navigation():
        fix.get_by_role("button", name="Sign correction").click()
    assert "corrected" in page.locator("p.flash").first.inner_text()
    assert count(db, "audit_event") > before
