"""Outcome agreements (issue 21): milestones from config/agreements evaluated per patient
from the signed follow-up records (met, not met, pending) into a signed statement (JSON,
PDF) whose signature binds its content."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import sig
from tests.helpers import assert_problem
from tests.test_outcomes_fixtures import (  # noqa: F401 - fixtures
    Ward,
    lab_fixture,
    plant_fixture,
    record_body,
    ward_fixture,
)

CODE = "OUTCOME-INSTALMENTS"
T0 = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)


def _shipped():
    from outcomes.agreements import load_agreements

    return load_agreements(Path(__file__).parent.parent / "config" / "agreements")[CODE]


def _a(record_id: int, day: float, response: str, alive: bool = True,
       death: date | None = None):
    from outcomes.agreements import Assessment

    return Assessment(record_id, f"D{day}", T0 + timedelta(days=day), response, alive, death)


@pytest.mark.parametrize(("assessments", "expected"), [
    # in remission at a year: every milestone met
    ([_a(1, 28, "PR"), _a(2, 100, "CR"), _a(3, 182, "CR"), _a(4, 366, "CR")],
     ["met", "met", "met"]),
    # progression at day 100: not progression-free; partial response at a year: no remission
    ([_a(1, 28, "PR"), _a(2, 100, "PD"), _a(3, 366, "PR")], ["met", "not_met", "not_met"]),
    # only day 28 recorded: the later milestones wait for their evidence
    ([_a(1, 28, "CR")], ["met", "pending", "pending"]),
    # died at day 150: both later milestones not met
    ([_a(1, 28, "SD"), _a(2, 151, "PD", alive=False, death=(T0 + timedelta(days=150)).date())],
     ["met", "not_met", "not_met"]),
    # not evaluable at a year is no assessment
    ([_a(1, 182, "SD"), _a(2, 365, "NE")], ["met", "met", "pending"]),
])
def test_milestones_met_not_met_pending(assessments, expected) -> None:
    from outcomes.agreements import evaluate

    agreement = _shipped()
    got = [evaluate(m, T0, assessments).status.value for m in agreement.milestones]
    assert got == expected


def test_not_infused_is_pending_and_bad_files_are_refused() -> None:
    from outcomes.agreements import AgreementError, evaluate, parse_agreement

    assert {evaluate(m, None, []).status.value for m in _shipped().milestones} == {"pending"}
    with pytest.raises(AgreementError, match="milestones"):
        parse_agreement({"code": "X", "version": 1, "name": "x", "process": "CART-AUTO",
                         "milestones": [{"code": "a", "kind": "in_remission"}]}, "test")
    with pytest.raises(AgreementError, match="code"):
        parse_agreement({"code": "lower", "version": 1, "name": "x", "process": "P",
                         "milestones": [{"code": "a", "kind": "infused"}]}, "test")


@pytest.mark.requirement("SPEC §16")
@pytest.mark.requirement("21 CFR 11.70")
def test_signed_statements_for_three_patients(ward: Ward, login, db) -> None:
    from sqlalchemy import text

    from gmp_mes.clock import clock, utcnow

    api = login(ward.clinician)
    met, not_met, pending = (ward.infused(api) for _ in range(3))
    infused = {p[0]: ward.administered_at(p[2]) for p in (met, not_met, pending)}
    clock.freeze(max(utcnow(), max(infused.values()) + timedelta(days=370)))
    api = login(ward.clinician)

    def record(patient, visit: str, day: int, response: str) -> None:
        at = (infused[patient[0]] + timedelta(days=day)).astimezone(UTC).isoformat()
        answer = api.post(f"/api/v1/patients/{patient[0]}/follow-up",
                          json=record_body(visit, assessed_at=at, response=response))
        assert answer.status_code == 201, answer.get_json()

    for visit, day, response in (("P28D", 28, "PR"), ("P100D", 100, "CR"), ("P1Y", 366, "CR")):
        record(met, visit, day, response)
    for visit, day, response in (("P28D", 28, "PR"), ("P100D", 101, "PD"), ("P1Y", 366, "SD")):
        record(not_met, visit, day, response)
    record(pending, "P28D", 29, "CR")

    statuses = {}
    for patient in (met, not_met, pending):
        preview = api.get(f"/api/v1/patients/{patient[0]}/agreements/{CODE}")
        assert preview.status_code == 200, preview.get_json()
        issued = api.post(f"/api/v1/patients/{patient[0]}/agreements/{CODE}/statements",
                          json={"signature": sig("approved")})
        assert issued.status_code == 201, issued.get_json()
        body = issued.get_json()
        assert body["signature_binds"] is True and body["signature"]["meaning"] == "approved"
        assert body["content"]["coi_id"] == patient[0]
        assert body["content"]["batch_number"] == patient[1]
        assert [m["status"] for m in preview.get_json()["milestones"]] == [
            m["status"] for m in body["content"]["milestones"]]
        statuses[patient[0]] = ([m["status"] for m in body["content"]["milestones"]], body)
    assert statuses[met[0]][0] == ["met", "met", "met"]
    assert statuses[not_met[0]][0] == ["met", "not_met", "not_met"]
    assert statuses[pending[0]][0] == ["met", "pending", "pending"]
    # The not-met milestone names the record it rests on (the progression at day 101).
    content = statuses[not_met[0]][1]["content"]
    pd = next(r for r in content["records"] if r["response"] == "PD")
    assert content["milestones"][1]["evidence"] == [pd["id"]]

    statement = statuses[met[0]][1]
    again = login(ward.lab.qa).get(f"/api/v1/agreement-statements/{statement['id']}")
    assert again.status_code == 200 and again.get_json()["content"] == statement["content"]
    pdf = api.get(f"/api/v1/agreement-statements/{statement['id']}/pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert pdf.data.startswith(b"%PDF")
    # The signature binds the content: changed content no longer matches its digest ...
    from gmp_mes.models import Signature
    from gmp_mes.signatures import still_binds

    with ward.tx() as s:
        from outcomes import services

        view = services.get_statement(s, statement["id"])
        changed = {**view.document, "milestones": [{**m, "status": "not_met"}
                                                   for m in view.document["milestones"]]}
        signature = s.get(Signature, view.statement.signature_id)
        assert still_binds(signature, view.document) and not still_binds(signature, changed)
    # ... and the stored statement cannot be changed (append-only guard).
    with pytest.raises(Exception, match=r"(?i)append-only|not allowed|refuse"), \
            db.engine.begin() as c:
        c.execute(text("UPDATE agreement_statement SET content = '{}' WHERE id = :i"),
                  {"i": statement["id"]})


def test_statement_roles_and_unknown_agreement(ward: Ward, login) -> None:
    api = login(ward.clinician)
    coi, _, _ = ward.infused(api)
    assert_problem(api.get(f"/api/v1/patients/{coi}/agreements/NO-SUCH"), 404)
    assert_problem(login(ward.lab.qa).post(
        f"/api/v1/patients/{coi}/agreements/{CODE}/statements",
        json={"signature": sig("approved")}), 403, "forbidden_role")
    assert_problem(api.post(f"/api/v1/patients/{coi}/agreements/{CODE}/statements",
                            json={"signature": sig("performed")}), 422)
    assert_problem(login(ward.lab.plant.operator).get(
        f"/api/v1/patients/{coi}/agreements/{CODE}"), 403, "forbidden_role")


def test_patient_page_signs_a_statement(ward: Ward, login, client) -> None:
    from tests.test_pages_core import csrf_from, page_login

    coi, _, _ = ward.infused(login(ward.clinician))
    page_login(client, ward.clinician)
    html = client.get(f"/patients/{coi}").get_data(as_text=True)
    assert f'data-agreement="{CODE}"' in html and "Alive and progression-free" in html
    wrong = client.post(f"/patients/{coi}/agreements/{CODE}/statements",
                        data={"csrf_token": csrf_from(html), "password": "wrong"})
    assert wrong.status_code == 401
    signed = client.post(f"/patients/{coi}/agreements/{CODE}/statements",
                         data={"csrf_token": csrf_from(html),
                               "password": ward.clinician.password})
    assert signed.status_code == 302
    html = client.get(f"/patients/{coi}").get_data(as_text=True)
    assert "Signed statements" in html and ".pdf" in html
    link = html[html.index("/agreement-statements/"):].split('"')[0]
    pdf = client.get(link)
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")


# --- a bad agreement file is refused at load (file and field named, never a 500) -------

GOOD = Path(__file__).parent.parent / "config" / "agreements" / "outcome-instalments-v1.toml"
BAD_FILES = {
    # (what is wrong, file text, the field the one line names)
    "syntax": (GOOD.read_text().replace('version = 1', 'version = = 1'), "not valid TOML"),
    "unknown_kind": (GOOD.read_text().replace('kind = "in_remission"', 'kind = "cured"'),
                     "milestones[2].kind: unknown milestone kind 'cured'"),
    "missing_at": (GOOD.read_text().replace('at = "P182D"\n', ''),
                   "milestones[1].at: required for kind alive_progression_free"),
    "missing_name": (GOOD.read_text().replace('name = "Payment at outcome: infusion, 6 and 12 '
                                              'months"\n', ''), "name: required"),
}


def _bad_dir(tmp_path: Path, which: str) -> Path:
    folder = tmp_path / "agreements"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "good.toml").write_text(GOOD.read_text().replace(CODE, "OTHER-AGREEMENT"))
    (folder / f"{which}.toml").write_text(BAD_FILES[which][0])
    return folder


@pytest.mark.parametrize("which", sorted(BAD_FILES))
def test_a_bad_agreement_file_is_refused_naming_file_and_field(tmp_path: Path,
                                                               which: str) -> None:
    from outcomes.agreements import AgreementError, load_agreements

    folder = _bad_dir(tmp_path, which)
    with pytest.raises(AgreementError) as caught:
        load_agreements(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"agreement file {folder / which}.toml: ")
    assert BAD_FILES[which][1] in message


def test_two_files_with_one_code_and_version_are_refused(tmp_path: Path) -> None:
    from outcomes.agreements import AgreementError, load_agreements

    folder = tmp_path / "agreements"
    folder.mkdir()
    (folder / "a.toml").write_text(GOOD.read_text())
    (folder / "b.toml").write_text(GOOD.read_text())
    with pytest.raises(AgreementError, match=r"b\.toml: version: .* already defined in .*a\.toml"):
        load_agreements(folder)


def test_api_and_pages_answer_a_bad_file_with_its_line(ward: Ward, login, client, app,
                                                       tmp_path: Path) -> None:
    from tests.test_pages_core import csrf_from, page_login

    api = login(ward.clinician)
    coi, _, _ = ward.infused(api)
    app.config["AGREEMENT_DIR"] = str(_bad_dir(tmp_path, "unknown_kind"))
    for answer in (api.get(f"/api/v1/patients/{coi}/agreements/{CODE}"),
                   api.post(f"/api/v1/patients/{coi}/agreements/{CODE}/statements",
                            json={"signature": sig("approved")})):
        body = assert_problem(answer, 409, "agreement_definition_invalid")
        assert "unknown_kind.toml" in body["detail"] and "milestones[2].kind" in body["detail"]
        assert any(key.endswith("unknown_kind.toml:milestones[2].kind")
                   for key in body["errors"])
    page_login(client, ward.clinician)
    patient = client.get(f"/patients/{coi}")
    html = patient.get_data(as_text=True)
    # The follow-up stays usable; the agreements say why they are not shown.
    assert patient.status_code == 200 and 'id="follow-up"' in html
    assert 'id="agreements-refused"' in html and "unknown milestone kind" in html
    signed = client.post(f"/patients/{coi}/agreements/{CODE}/statements",
                         data={"csrf_token": csrf_from(html),
                               "password": ward.clinician.password})
    assert signed.status_code == 409 and "unknown_kind.toml" in signed.get_data(as_text=True)
    page = client.get("/agreements")
    assert page.status_code == 409 and "milestones[2].kind" in page.get_data(as_text=True)
    app.config["AGREEMENT_DIR"] = str(GOOD.parent)
    page = client.get("/agreements")
    assert page.status_code == 200 and f'data-agreement="{CODE}"' in page.get_data(as_text=True)
    assert "P182D" in page.get_data(as_text=True)


def test_cli_check_and_init_refuse_a_bad_file_in_one_line(app, runner,
                                                          tmp_path: Path) -> None:
    good = runner.invoke(args=["agreements", "check"])
    assert good.exit_code == 0, good.output
    assert f"{CODE} v1" in good.output
    app.config["AGREEMENT_DIR"] = str(_bad_dir(tmp_path, "missing_at"))
    for args in (["agreements", "check"], ["init"]):
        result = runner.invoke(args=args)
        assert result.exit_code != 0
        lines = [line for line in result.output.splitlines()
                 if "missing_at.toml" in line]
        assert len(lines) == 1 and "milestones[1].at: required" in lines[0]
        assert "Traceback" not in result.output


def test_the_app_names_a_bad_file_at_start(app_config, installed_domains, tmp_path: Path,
                                           monkeypatch, caplog) -> None:
    from gmp_mes.app import create_app
    from outcomes.services import statements

    config = tmp_path / "config"
    _bad_dir(config, "syntax")
    monkeypatch.setattr(statements, "CONFIG_DIR", config)
    with caplog.at_level("ERROR"):
        started = create_app(app_config, domains=installed_domains)
    try:
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert any("syntax.toml" in m and "not valid TOML" in m for m in errors), errors
    finally:
        started.extensions["gmp_mes.db"].dispose()
