"""Training pages (SPEC §7b, §12): the matrix (people x qualifications, expiring soon
highlighted), the grant and revoke forms for QA and admins (refused forms keep what was
typed, a success redirects), read-only for operators, a person's history, the QA panel."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

import processes.services as processes
from gmp_mes.clock import clock
from gmp_mes.signatures import SignatureInput
from tests.conftest import PASSWORD
from tests.helpers import count
from tests.test_pages_core import page_login
from tests.test_training_fixtures import CODE, School, school_fixture  # noqa: F401

pytestmark = pytest.mark.requirement("EU GMP Part IV 3")


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def _post(client, path: str, data: dict):
    token = _csrf(client.get("/training").get_data(as_text=True))
    return client.post(path, data={**data, "csrf_token": token},
                       headers={"Accept": "text/html"})


def _cell(html: str, username: str) -> list[str]:
    row = re.search(rf'<tr data-user="{username}">(.*?)</tr>', html, re.S)
    assert row, html
    return re.findall(r'data-status="([a-z_]+)"', row.group(1))


def test_the_matrix_shows_each_persons_standing_with_expiring_soon_highlighted(
        school: School, client) -> None:
    with school.tx(school.qa) as s:
        processes.load_process_definitions(s)
        processes.approve_process(s, "CART-AUTO", 4, user_id=school.qa.user_id,
                                  signature=SignatureInput(PASSWORD, "approved"))
    school.grant(school.operator, days=10)  # runs out within 30 days
    school.grant(school.operator2, days=200)
    school.grant(school.operator2, "cart_manufacturing", days=1)
    clock.advance(timedelta(days=2))
    page_login(client, school.qa)
    html = client.get("/training").get_data(as_text=True)
    # Codes: granted ones and those the approved v4 declares, by code.
    assert re.findall(r'<th scope="col">([a-z_]+)', html) == [
        "aseptic_processing", "cart_manufacturing"]
    assert _cell(html, "olga") == ["expiring_soon", "none"]
    assert _cell(html, "oscar") == ["valid", "expired"]
    assert 'class="cell-expiring_soon"' in html and "Grant a qualification" in html
    assert "Qualifications expiring within 30 days" in client.get("/").get_data(as_text=True)


def test_operators_read_the_matrix_but_cannot_grant(school: School, client) -> None:
    school.grant(school.operator)
    page_login(client, school.operator2)
    html = client.get("/training").get_data(as_text=True)
    assert _cell(html, "olga") == ["valid"]
    assert "Grant a qualification" not in html and "Revoke" not in html
    refused = _post(client, "/training/grant", {"username": "oscar", "code": CODE,
                                                "valid_until": "2999-01-01",
                                                "password": PASSWORD})
    assert refused.status_code == 403
    history = client.get("/training/people/olga").get_data(as_text=True)
    assert CODE in history and "valid" in history
    assert client.get("/training/people/nobody").status_code == 404


def test_grant_by_form_redirects_and_a_refusal_keeps_what_was_typed(
        school: School, client) -> None:
    page_login(client, school.qa)
    wrong = _post(client, "/training/grant", {
        "username": "olga", "code": CODE, "valid_until": "2999-06-30",
        "password": "wrong", "signature_reason": "annual media fill"})
    assert wrong.status_code == 401
    html = wrong.get_data(as_text=True)
    assert "Your signature failed" in html
    assert 'value="olga"' in html and f'value="{CODE}"' in html
    assert 'value="2999-06-30"' in html and 'value="annual media fill"' in html
    assert 'value="wrong"' not in html  # never a password
    mine = _post(client, "/training/grant", {"username": "quinn", "code": CODE,
                                             "valid_until": "2999-06-30",
                                             "password": PASSWORD})
    assert mine.status_code == 403 and "to yourself" in mine.get_data(as_text=True)
    bad = _post(client, "/training/grant", {"username": "olga", "code": "Bad Code",
                                            "valid_until": "soon", "password": PASSWORD})
    assert bad.status_code == 422
    assert 'id="valid_until-error"' in bad.get_data(as_text=True)
    nobody = _post(client, "/training/grant", {"username": "nobody", "code": CODE,
                                               "valid_until": "2999-06-30",
                                               "password": PASSWORD})
    assert nobody.status_code == 404 and 'id="username-error"' in nobody.get_data(as_text=True)
    assert count(school.db, "qualification") == 0
    done = _post(client, "/training/grant", {"username": "olga", "code": CODE,
                                             "valid_until": "2999-06-30T17:00",
                                             "password": PASSWORD})
    assert done.status_code == 302 and done.headers["Location"].startswith("/training")
    html = client.get("/training").get_data(as_text=True)
    assert f"{CODE} granted to olga" in html and _cell(html, "olga") == ["valid"]


def test_revoke_by_form_needs_a_reason_and_then_shows_revoked(school: School, client) -> None:
    school.grant(school.operator)
    page_login(client, school.admin)
    missing = _post(client, "/training/revoke", {"revoke_username": "olga",
                                                 "revoke_code": CODE})
    assert missing.status_code == 422
    assert 'id="reason-error"' in missing.get_data(as_text=True)
    assert 'value="olga"' in missing.get_data(as_text=True)
    done = _post(client, "/training/revoke", {"revoke_username": "olga",
                                              "revoke_code": CODE,
                                              "reason": "left the aseptic team"})
    assert done.status_code == 302
    html = client.get("/training").get_data(as_text=True)
    assert _cell(html, "olga") == ["revoked"]
    again = _post(client, "/training/revoke", {"revoke_username": "olga",
                                               "revoke_code": CODE, "reason": "twice"})
    assert again.status_code == 409 and "in force" in again.get_data(as_text=True)
    history = client.get("/training/people/olga").get_data(as_text=True)
    assert "left the aseptic team" in history
