"""Alerts in a real browser: the dashboard countdown ticks, the acknowledge button works
with its CSRF token (issue 8)."""

from __future__ import annotations

import re
from datetime import timedelta

from gmp_mes import alerts
from gmp_mes.alerts import AlertSpec
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from tests.browser.conftest import log_in, screenshot, submit


def raise_(db, cause: str, kind: str, due_in: timedelta | None) -> None:
    with db.transaction(actor=Actor.system("test")) as s:
        alerts.raise_alert(s, AlertSpec(
            cause=cause, kind=kind, severity="warning" if kind == "expiry_warning" else "major",
            subject_type="item", subject_id=cause.split(":")[1],
            message=f"final product {cause.split(':')[1]} {kind.replace('_', ' ')}",
            roles=("operator", "qa"), site_code="CLEAN1",
            due_at=utcnow() + due_in if due_in else None,
        ))


def test_countdown_ticks_and_acknowledge_button(page, make_user, db) -> None:
    person = make_user("opalert", "operator")
    raise_(db, "expiry_warning:ITM-SOON0001:PT1M", "expiry_warning", timedelta(seconds=40))
    raise_(db, "expired:ITM-GONE0001", "expired", None)
    log_in(page, person)
    panel = page.locator("section.card", has_text="Expiring soon (countdown)")
    countdown = panel.locator(".countdown")
    first = countdown.inner_text()
    assert re.fullmatch(r"\d+ s", first), first
    page.wait_for_function(
        "(old) => document.querySelector('.countdown[data-due]').textContent !== old", arg=first
    )
    assert int(countdown.inner_text().split()[0]) < int(first.split()[0])
    assert page.locator("section.card", has_text="Open alerts (2)").is_visible()
    screenshot(page, "alerts-dashboard")
    page.goto("/alerts")
    row = page.locator("tr.alert-row", has_text="ITM-GONE0001")
    row.get_by_label("Note").fill("bag moved to quarantine")
    submit(page, row.get_by_role("button", name="Acknowledge"))
    assert page.get_by_role("status").inner_text() == "Alert 2 acknowledged."
    assert page.locator("tr.alert-row", has_text="ITM-GONE0001").count() == 0
    page.goto("/alerts?status=acknowledged")
    assert "acknowledged by opalert" in page.content()
    assert "bag moved to quarantine" in page.content()
    screenshot(page, "alerts-acknowledged")
