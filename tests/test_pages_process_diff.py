"""The process approval page shows what changed from the previous version (issue 15)."""

from __future__ import annotations

import json

import processes.services as processes
from tests.test_batches_api import csrf_from, page_login


def test_approval_page_shows_the_version_diff(app, db, make_user, client) -> None:
    from processes.models import ProcessVersion

    qa = make_user("quinn", "qa")
    with app.app_context(), db.transaction(actor=qa.actor) as s:
        processes.load_process_definitions(s)
        first = processes.get_process_version(s, "CART-AUTO", 1)
        definition = json.loads(first.definition)
        definition["version"] = 2
        definition["name"] = definition["name"] + " (longer expansion)"
        s.add(ProcessVersion(code="CART-AUTO", version=2, name=definition["name"],
                             digest="0" * 64, definition=json.dumps(definition),
                             source="test"))
    page_login(client, qa)
    html = client.get("/processes").get_data(as_text=True)
    assert "First version of CART-AUTO" in html
    assert "Changes from version 1" in html
    assert '<span class="diff-add">+' in html and "(longer expansion)" in html
    assert '<span class="diff-del">-' in html
    assert csrf_from(html)
