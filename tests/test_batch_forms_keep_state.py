"""The batch page's deviation forms keep what was typed when refused (issue 15 "Forms
that keep state"): the message at its field, a focused summary, never a password; and
post/redirect/get after a success."""

from __future__ import annotations

from tests.test_batches_fixtures import Plant, plant_fixture  # noqa: F401
from tests.test_identity_pages import Browser


def test_report_deviation_refused_keeps_what_was_typed(plant: Plant, client) -> None:
    number = plant.start()
    browser = Browser(client, plant.operator)
    refused = browser.post(f"/batches/{number}/deviations", {
        "severity": "catastrophic", "step_code": "receipt",
        "description": "bag label smudged <b>"})
    html = refused.get_data(as_text=True)
    assert refused.status_code == 422
    assert "data-focus" in html and 'id="dev-new-errors"' in html
    assert "bag label smudged &lt;b&gt;</textarea>" in html
    assert '<option value="receipt" selected>' in html
    assert "must be minor, major or critical" in html and "<details open>" in html
    done = browser.post(f"/batches/{number}/deviations", {
        "severity": "minor", "description": "bag label smudged"})
    assert done.status_code == 302  # post/redirect/get


def test_assess_deviation_wrong_password_keeps_the_assessment(plant: Plant, client) -> None:
    number = plant.start()
    operator = Browser(client, plant.operator)
    operator.post(f"/batches/{number}/deviations", {
        "severity": "minor", "description": "bag label smudged"})
    page = operator.get(f"/batches/{number}").get_data(as_text=True)
    qa = Browser(client.application.test_client(), plant.qa)
    page = qa.get(f"/batches/{number}").get_data(as_text=True)
    ref = page.split('action="/deviations/', 1)[1].split("/", 1)[0]
    refused = qa.post(f"/deviations/{ref}/assess", {
        "batch_number": number, "text": "no impact on the product", "severity": "major",
        "meaning": "reviewed", "password": "wrong-password"})
    html = refused.get_data(as_text=True)
    assert refused.status_code in (401, 403, 422), refused.status_code
    assert f'id="dev-{ref}-errors"' in html and "data-focus" in html
    assert "Your signature (performer) failed" in html
    assert "no impact on the product</textarea>" in html and "<option selected>major" in html
    assert "wrong-password" not in html
    done = qa.post(f"/deviations/{ref}/assess", {
        "batch_number": number, "text": "no impact on the product", "meaning": "reviewed",
        "password": plant.qa.password})
    assert done.status_code == 302
