"""The process approval page shows what changed from the previous version (issue 15)."""

from __future__ import annotations

import html as html_

import pytest

import processes.services as processes
from tests.test_batches_api import csrf_from, page_login


@pytest.mark.requirement("EU GMP Chapter 4.3")
def test_approval_page_shows_the_version_diff(app, db, make_user, client) -> None:
    """CART-AUTO v2 (the label check after the fill) against v1, as QA sees it."""

    qa = make_user("quinn", "qa")
    with app.app_context(), db.transaction(actor=qa.actor) as s:
        processes.load_process_definitions(s)
        previous, changes = processes.definition_diff(
            s, processes.get_process_version(s, "CART-AUTO", 2))
    assert previous == 1
    removed = "\n".join(line for kind, line in changes if kind == "-")
    added = "\n".join(line for kind, line in changes if kind == "+")
    assert '"labels_verified"' in removed and "labels_verified" not in added
    assert '"label_check"' in added and '"scans": "final_product"' in added
    assert '"version": 2' in added and '"version": 1' in removed
    page_login(client, qa)
    html = html_.unescape(client.get("/processes").get_data(as_text=True))
    assert "First version of CART-AUTO" in html
    assert "Changes from version 1" in html
    assert '<span class="diff-add">+' in html and '"code": "label_check"' in html
    assert '<span class="diff-del">-' in html and '"code": "labels_verified"' in html
    assert csrf_from(html)
