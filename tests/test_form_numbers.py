"""One number parser for every page form (issue 15): step values, QC results and
corrections go through ``gmp_mes.schemas.form_number``, the collection form's volume too,
with the decimal separator of the user's site (``site.decimal_separator``): the ISO point
is always accepted, the comma only at a comma site; at a point site "1,234" is refused
with a message naming the site's convention, never read as 1.234."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from gmp_mes import accounts
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow
from gmp_mes.schemas import DecimalSeparatorRefused, form_number, number_example
from identity.schemas import CollectionFormSchema
from tests.helpers import audit_events, count
from tests.test_batches_fixtures import APHERESIS, HOSPITAL, Plant, plant_fixture  # noqa: F401
from tests.test_identity_pages import Browser
from tests.test_qc_fixtures import Lab, lab_fixture  # noqa: F401

POINT_MESSAGE = "this site writes decimals with a point: 1.5"

# Two decimals at most, as people type measured values.
amounts = st.decimals(min_value="0.01", max_value="4999.99", places=2, allow_nan=False,
                      allow_infinity=False)
finite = st.floats(allow_nan=False, allow_infinity=False)


def _collection_volume(typed: str, separator: str) -> object:
    loaded = CollectionFormSchema(partial=True, decimal_separator=separator).load(
        {"volume_ml": typed, "collected_at": datetime(2026, 12, 1, 8, 30).isoformat()},
        partial=True, unknown="exclude")
    return loaded["volume_ml"]


@given(finite, st.sampled_from([".", ","]))
def test_a_number_written_as_the_site_writes_it_reads_back_equal(number: float,
                                                                  separator: str) -> None:
    iso = repr(number)  # the shortest text that reads back exactly, with a point
    assert form_number(iso.replace(".", separator), separator) == number
    # The ISO point form is read at every site.
    assert form_number(iso, separator) == number


@given(amounts)
def test_the_collection_volume_reads_as_the_other_forms(amount) -> None:
    point = f"{amount:.2f}"
    comma = point.replace(".", ",")
    assert _collection_volume(point, ",") == _collection_volume(comma, ",") == float(amount)
    assert _collection_volume(point, ".") == float(amount)
    assert form_number(f" {comma} ", ",") == float(amount)


@pytest.mark.requirement("EU GMP Annex 11 §6")
@pytest.mark.parametrize("typed", ["1,234", "1,5", "-0,25", ",5", "1,000.5", "1.234,5"])
def test_a_point_site_refuses_a_comma_with_its_convention(typed: str) -> None:
    with pytest.raises(DecimalSeparatorRefused, match=POINT_MESSAGE):
        form_number(typed, ".")
    with pytest.raises(Exception, match=POINT_MESSAGE):
        _collection_volume(typed, ".")


NOT_NUMBERS = ["nan", "inf", "-inf", "1_000", "25O", "0x10", "1e999", "1.000.000"]


@pytest.mark.parametrize(("typed", "separator"), [
    *((typed, ".") for typed in NOT_NUMBERS),
    *((typed, ",") for typed in [*NOT_NUMBERS, "1.234,5", "1,2,3", "1,000.5"]),
])
def test_text_that_is_not_a_plain_number_comes_back_for_the_refusal(typed: str,
                                                                    separator: str) -> None:
    assert form_number(typed, separator) == typed


def test_a_comma_site_reads_its_comma_and_the_point() -> None:
    assert form_number("1,234", ",") == 1.234
    assert form_number("1.234", ",") == 1.234
    assert form_number("1.234", ".") == 1.234
    assert form_number("  ", ",") is None and form_number("", ".") is None
    assert number_example(",") == "1,5" and number_example(".", "250.5") == "250.5"


# --- the site's setting --------------------------------------------------------------------


def _comma_site(db: Any, code: str) -> None:
    with db.transaction(actor=Actor.system("test")) as s:
        accounts.set_decimal_separator(s, code, ",")


def test_the_separator_is_a_checked_column_of_the_site(db: Any, make_site: Any) -> None:
    code = make_site("DEC1")
    with db.engine.connect() as c:
        assert c.execute(text("SELECT decimal_separator FROM site WHERE code = :c"),
                         {"c": code}).scalar_one() == "."
    with pytest.raises(IntegrityError, match="decimal_separator"), db.engine.begin() as c:
        c.execute(text("UPDATE site SET decimal_separator = ';' WHERE code = :c"),
                  {"c": code})


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_admin_changes_the_separator_on_the_sites_page_audited(client: Any, db: Any,
                                                               make_user: Any) -> None:
    admin = make_user("ada", "admin")
    browser = Browser(client, admin)
    page = browser.get("/admin/sites").get_data(as_text=True)
    assert f'action="/admin/sites/{admin.site}/decimal-separator"' in page
    assert "decimal comma (1,5)" in page
    done = browser.post(f"/admin/sites/{admin.site}/decimal-separator",
                        {"decimal_separator": ","})
    assert done.status_code == 302
    assert "writes decimals with a decimal comma" in browser.get("/admin/sites").get_data(
        as_text=True)
    updates = [e for e in audit_events(db, entity_type="site", entity_id=admin.site)
               if e["action"] == "update"]
    assert len(updates) == 1 and updates[0]["username"] == "ada"
    change = json.loads(updates[0]["record"])
    assert change["old"]["decimal_separator"] == "." and change["new"]["decimal_separator"] == ","
    refused = browser.post(f"/admin/sites/{admin.site}/decimal-separator",
                           {"decimal_separator": ";"})
    assert refused.status_code == 302
    assert "Not changed" in browser.get("/admin/sites").get_data(as_text=True)
    assert len([e for e in audit_events(db, entity_type="site", entity_id=admin.site)
                if e["action"] == "update"]) == 1
    created = browser.post("/admin/sites", {"code": "KOELN", "name": "Köln", "kind":
                                            "collection", "timezone": "Europe/Berlin",
                                            "decimal_separator": ","})
    assert created.status_code == 302
    with db.engine.connect() as c:
        assert c.execute(text("SELECT decimal_separator FROM site WHERE code = 'KOELN'")
                         ).scalar_one() == ","


def test_sites_create_takes_the_separator(app: Any, db: Any) -> None:
    result = app.test_cli_runner().invoke(args=[
        "sites", "create", "WIEN", "--kind", "treatment", "--name", "Wien",
        "--decimal-separator", ","])
    assert result.exit_code == 0, result.output
    with db.engine.connect() as c:
        assert c.execute(text("SELECT decimal_separator FROM site WHERE code = 'WIEN'")
                         ).scalar_one() == ","


# --- every form kind at a comma site and at a point site ---------------------------------


def _step_form(plant: Plant, number: str, values: dict[str, str]) -> dict[str, str]:
    return {**{f"v_{k}": v for k, v in values.items()}, "password": plant.operator.password,
            "verifier_username": plant.operator2.username,
            "verifier_password": plant.operator2.password}


RECEIPT = {"coi_verified": "yes", "temperature_c": "4,6", "volume_ml": "212,5",
           "total_nucleated_cells": "1,18e10", "cd3_pct": "46,5"}


@pytest.mark.requirement("EU GMP Annex 11 §6")
def test_step_form_at_a_comma_site(plant: Plant, client: Any) -> None:
    number = plant.start()
    _comma_site(plant.db, plant.operator.site)
    browser = Browser(client, plant.operator)
    page = browser.get(f"/batches/{number}").get_data(as_text=True)
    assert 'placeholder="e.g. 1,5"' in page
    done = browser.post(f"/batches/{number}/steps/receipt", _step_form(plant, number, RECEIPT))
    assert done.status_code == 302, done.get_data(as_text=True)[:2000]
    with plant.db.engine.connect() as c:
        stored = json.loads(c.execute(text(
            "SELECT values_json FROM step_record WHERE step_code = 'receipt'")).scalar_one())
    assert stored["volume_ml"] == 212.5 and stored["total_nucleated_cells"] == 1.18e10
    assert stored["temperature_c"] == 4.6 and stored["cd3_pct"] == 46.5


@pytest.mark.requirement("EU GMP Annex 11 §6")
def test_step_form_at_a_point_site_refuses_a_comma_and_keeps_the_form(plant: Plant,
                                                                       client: Any) -> None:
    number = plant.start()
    browser = Browser(client, plant.operator)
    assert 'placeholder="e.g. 1.5"' in browser.get(f"/batches/{number}").get_data(
        as_text=True)
    values = {**RECEIPT, "temperature_c": "4.6", "volume_ml": "1,234", "cd3_pct": "46.5",
              "total_nucleated_cells": "1.18e10"}
    refused = browser.post(f"/batches/{number}/steps/receipt",
                           _step_form(plant, number, values))
    html = refused.get_data(as_text=True)
    assert refused.status_code == 422
    assert POINT_MESSAGE in html and 'value="1,234"' in html
    assert count(plant.db, "step_record") == 0


@pytest.mark.requirement("EU GMP Annex 11 §6")
def test_qc_entry_at_a_comma_site_and_at_a_point_site(lab: Lab, client: Any) -> None:
    number = lab.made()
    browser = Browser(client, lab.analyst)
    refused = browser.post(f"/qc/{number}", {"test": "endotoxin", "value": "0,5",
                                              "password": lab.analyst.password})
    html = refused.get_data(as_text=True)
    assert refused.status_code == 422 and POINT_MESSAGE in html
    assert count(lab.plant.db, "qc_result") == 0
    _comma_site(lab.plant.db, lab.analyst.site)
    assert 'placeholder="e.g. 1,5"' in browser.get(f"/qc/{number}").get_data(as_text=True)
    done = browser.post(f"/qc/{number}", {"test": "endotoxin", "value": "0,5",
                                           "password": lab.analyst.password})
    assert done.status_code == 302, done.get_data(as_text=True)[:2000]
    with lab.plant.db.engine.connect() as c:
        assert c.execute(text("SELECT value FROM qc_result")).scalar_one() == 0.5


@pytest.mark.requirement("EU GMP Annex 11 §6")
def test_collection_form_at_a_comma_site_and_at_a_point_site(plant: Plant,
                                                             client: Any) -> None:
    from identity import services as identity

    with plant.tx(plant.clinician) as s:
        coi_id = identity.enrol_patient(
            s, given_name="Grace", family_name="Comma", date_of_birth=date(1968, 12, 9),
            mrn="C00001", treatment_site=HOSPITAL).coi_id
    person = plant.apheresis
    browser = Browser(client, person)
    past = (utcnow() - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    form = {"coi_id": coi_id, "collected_at": past, "site": APHERESIS, "volume_ml": "250,5"}
    refused = browser.post("/collections/new", form)
    html = refused.get_data(as_text=True)
    assert refused.status_code == 422 and POINT_MESSAGE in html and 'value="250,5"' in html
    _comma_site(plant.db, person.site)
    assert 'placeholder="e.g. 250,5"' in browser.get("/collections/new").get_data(
        as_text=True)
    done = browser.post("/collections/new", form)
    assert done.status_code == 302, done.get_data(as_text=True)[:2000]
    with plant.db.engine.connect() as c:
        assert c.execute(text("SELECT volume_ml FROM collection")).scalar_one() == 250.5


def test_the_sites_api_sets_and_shows_the_decimal_separator(make_user: Any, login: Any) -> None:
    from tests.helpers import assert_problem

    admin = login(make_user("ada", "admin"))
    created = admin.post("/api/v1/sites", json={"code": "HOSP-DE", "kind": "treatment",
                                                "name": "Klinikum", "decimal_separator": ","})
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["decimal_separator"] == ","
    listed = {s["code"]: s for s in admin.get("/api/v1/sites").get_json()}
    assert listed["HOSP-DE"]["decimal_separator"] == ","
    plain = admin.post("/api/v1/sites", json={"code": "HOSP-UK", "kind": "treatment",
                                              "name": "Infirmary"})
    assert plain.get_json()["decimal_separator"] == "."  # the ISO point by default
    bad = admin.post("/api/v1/sites", json={"code": "HOSP-X", "kind": "treatment",
                                            "name": "X", "decimal_separator": ";"})
    assert_problem(bad, 422)
    assert "decimal_separator" in bad.get_json()["errors"]
