"""Final release of a conditionally released batch (SPEC §5, issue 13): the pending
result passing never finalises the release by itself; QA is alerted once and an
independent QA user signs the final release; the treating site is told."""

from __future__ import annotations

from typing import Any

import pytest

from gmp_mes.errors import DomainError, SignatureRejected
from tests.conftest import sig
from tests.helpers import assert_problem
from tests.test_pages_core import csrf_from, page_login
from tests.test_qc_fixtures import (  # noqa: F401 - fixtures
    Lab,
    lab_fixture,
    plant_fixture,
)


def _alerts(lab: Lab, kind: str, number: str) -> list[Any]:
    from gmp_mes.alerts import list_alerts

    with lab.tx() as s:
        return [a for a in list_alerts(s, kind=kind) if a.subject_id == number]


def _kinds(lab: Lab, number: str) -> list[str]:
    from qc import services

    with lab.tx() as s:
        return [d.kind for d in services.decisions_of(s, number)]


def _conditional(lab: Lab, *, bags: int = 1) -> str:
    number = lab.ready(skip=("sterility",), bags=bags)
    lab.release(number, conditional=True, justification="clinical urgency")
    return number


def _release(api: Any, number: str, **body: Any) -> Any:
    return api.post(f"/api/v1/batches/{number}/release",
                    json={"signature": sig("released"), **body})


@pytest.mark.requirement("EU GMP Annex 16 §1.7")
@pytest.mark.requirement("21 CFR 11.50")
@pytest.mark.requirement("21 CFR 11.10(f)")
def test_final_release_needs_an_independent_qa_signature(lab: Lab, login) -> None:
    from qc import services

    number = _conditional(lab, bags=2)
    qa2 = login(lab.qa2)
    # Nothing to finalise while the result is pending.
    problem = assert_problem(_release(qa2, number), 409, "qc_incomplete")
    assert "sterility" in problem["detail"]
    lab.result(number, "sterility")
    assert lab.status(number) == "conditionally_released"
    assert set(lab.items(number).values()) == {"conditionally_released"}
    assert _kinds(lab, number) == ["conditional_release"]
    record = qa2.get(f"/api/v1/batches/{number}").get_json()
    assert record["status"] == "conditionally_released" and record["release"]["conditional"]
    # A second conditional release is not the final one.
    assert_problem(_release(qa2, number, conditional={"justification": "again"}), 409,
                   "invalid_transition")
    assert_problem(_release(qa2, number, signature=sig("released", password="wrong")), 401,
                   "signature_rejected")
    assert lab.status(number) == "conditionally_released"
    response = _release(qa2, number)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["kind"] == "final_release" and body["conditional"] is False
    assert body["batch_status"] == "released"
    assert set(body["item_statuses"].values()) == {"released"}
    assert body["signature"]["meaning"] == "released"
    assert body["signature"]["username"] == lab.qa2.username
    assert_problem(_release(qa2, number), 409, "invalid_transition")
    with lab.tx() as s:
        final = services.decisions_of(s, number)[-1]
    assert final.decided_by == lab.qa2.user_id and final.pending_tests == ["sterility"]


@pytest.mark.requirement("SPEC §5.4 (segregation of duties)")
def test_a_qa_qc_user_who_entered_the_pending_result_cannot_give_it(
    lab: Lab, login, make_user
) -> None:
    both = make_user("qara", "qa", "qc")
    number = _conditional(lab)
    lab.result(number, "sterility", person=both)
    problem = assert_problem(_release(login(both), number), 403, "segregation_of_duties")
    assert "QC result" in problem["detail"]
    assert lab.status(number) == "conditionally_released"
    assert _kinds(lab, number) == ["conditional_release"]
    # The QA user who gave the conditional release may give the final one; so may
    # another independent QA user (here the second).
    assert lab.release(number, lab.qa2) == "final_release"


@pytest.mark.requirement("SPEC §5 (QA alerted)")
def test_qa_is_alerted_once_and_the_treating_site_is_told(lab: Lab) -> None:
    from qc import services

    number = _conditional(lab)
    assert _alerts(lab, services.FINAL_RELEASE_DUE, number) == []
    first, _ = lab.result(number, "sterility")
    # A correction that still passes raises no second alert.
    lab.result(number, "sterility", fields={"outcome": "negative"}, corrects=first,
               reason="read on the second reader")
    (due,) = _alerts(lab, services.FINAL_RELEASE_DUE, number)
    assert due.role_list == ["qa"] and due.site_code is None and due.status == "open"
    assert number in due.message and "final release" in due.message.lower()
    assert _alerts(lab, services.FINAL_RELEASE_GIVEN, number) == []
    lab.release(number, lab.qa2)
    (due,) = _alerts(lab, services.FINAL_RELEASE_DUE, number)
    assert due.status == "acknowledged" and due.acknowledged_by == lab.qa2.user_id
    (given,) = _alerts(lab, services.FINAL_RELEASE_GIVEN, number)
    assert given.role_list == ["clinician"] and given.site_code == "HOSP1"
    assert number in given.message


def test_no_final_release_after_a_failure(lab: Lab) -> None:
    from qc import services

    number = _conditional(lab)
    lab.result(number, "sterility", fields={"outcome": "positive"})
    with pytest.raises(DomainError) as caught:
        lab.release(number, lab.qa2)
    assert caught.value.status == 409 and caught.value.code == "qc_failed"
    assert _alerts(lab, services.FINAL_RELEASE_DUE, number) == []
    assert set(lab.items(number).values()) == {"blocked"}


def test_wrong_password_gives_no_final_release(lab: Lab) -> None:
    number = _conditional(lab)
    lab.result(number, "sterility")
    with pytest.raises(SignatureRejected):
        lab.release(number, lab.qa2, password="wrong")
    assert lab.status(number) == "conditionally_released"
    assert _kinds(lab, number) == ["conditional_release"]


def test_release_queue_page_shows_the_final_release_due(lab: Lab, client, login) -> None:
    number = _conditional(lab)
    pending = _conditional(lab)
    lab.result(number, "sterility")
    queue = {e["batch_number"]: e for e in
             login(lab.qa2).get("/api/v1/qa/release-queue").get_json()}
    assert queue[number]["final_release_due"] is True and queue[number]["problems"] == []
    assert queue[pending]["final_release_due"] is False
    page_login(client, lab.qa2)
    html = client.get("/qa/release").get_data(as_text=True)
    section = html[html.index(f'id="b-{number}"'):]
    section = section[:section.index("</section>")]
    assert "Final release due" in section and "Final release</button>" in section
    other = html[html.index(f'id="b-{pending}"'):]
    assert "Final release</button>" not in other[:other.index("</section>")]
    done = client.post(f"/qa/release/{number}", data={
        "csrf_token": csrf_from(html), "action": "release", "password": lab.qa2.password})
    assert done.status_code == 302
    assert lab.status(number) == "released"
    assert set(lab.items(number).values()) == {"released"}


def test_rejecting_instead_closes_the_due_alert(lab: Lab) -> None:
    from qc import services
    from tests.test_qc_fixtures import signed

    number = _conditional(lab)
    lab.result(number, "sterility")
    with lab.tx(lab.qa2) as s:
        services.reject_batch(s, number, user_id=lab.qa2.user_id,
                              signature=signed("rejected"), reason="trend review")
    (due,) = _alerts(lab, services.FINAL_RELEASE_DUE, number)
    assert due.status == "acknowledged" and "rejected" in due.acknowledge_note
    assert _alerts(lab, services.FINAL_RELEASE_GIVEN, number) == []


@pytest.mark.requirement("SPEC §5 (one transaction that locks the batch)")
def test_concurrent_final_releases_give_exactly_one(lab: Lab, app, login, db) -> None:
    import threading

    from tests.conftest import ApiClient
    from tests.helpers import count

    number = _conditional(lab, bags=2)
    lab.result(number, "sterility")
    tokens = [login(lab.qa).token, login(lab.qa2).token]
    barrier = threading.Barrier(8)
    statuses: list[Any] = [None] * 8

    def attempt(n: int) -> None:
        api = ApiClient(app.test_client(), tokens[n % 2])
        barrier.wait()
        response = _release(api, number)
        statuses[n] = (response.status_code, (response.get_json() or {}).get("code"))

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [s[0] for s in statuses].count(201) == 1, statuses
    assert statuses.count((409, "invalid_transition")) == 7, statuses
    assert _kinds(lab, number) == ["conditional_release", "final_release"]
    assert count(db, "release_decision") == 2
    assert set(lab.items(number).values()) == {"released"}
    from qc import services

    assert len(_alerts(lab, services.FINAL_RELEASE_GIVEN, number)) == 1
