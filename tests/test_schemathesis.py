"""schemathesis against the running application, for every role (issue 14).

The OpenAPI document is loaded from the application itself, the demo data set is
seeded, and every operation is called with generated requests (valid and invalid
ones, with path values both generated and taken from the demo's real batches, items,
patients, deviations, labels and processes) under a bearer token of each role. No
answer may be a 5xx, and every answer must match the response schema the document
declares (errors as application/problem+json included). Examples are bounded so that
the run stays short; CI's derandomised Hypothesis profile applies.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

ROLES = ("operator", "qc", "qa", "clinician", "admin")
EXAMPLES_PER_OPERATION = 6


def known_values(db) -> dict[str, list]:
    """Real path values from the seeded demo, so detail endpoints answer 200 too."""
    queries = {
        "batch_number": "SELECT batch_number FROM batch ORDER BY 1 LIMIT 4",
        "item_id": "SELECT item_id FROM item ORDER BY 1 LIMIT 6",
        "coi_id": "SELECT coi_id FROM patient ORDER BY 1 LIMIT 3",
        "ref": "SELECT number FROM deviation ORDER BY 1 LIMIT 3",
        "label_id": "SELECT label_id FROM label_print ORDER BY 1 LIMIT 3",
        "code": "SELECT code FROM process_version ORDER BY 1 LIMIT 2",
        "version": "SELECT version FROM process_version ORDER BY 1 LIMIT 2",
        "step_code": "SELECT step_code FROM step_record ORDER BY 1 LIMIT 3",
        "result_id": "SELECT id FROM qc_result ORDER BY 1 LIMIT 3",
        "alert_id": "SELECT id FROM alert ORDER BY 1 LIMIT 3",
        "username": "SELECT username FROM app_user ORDER BY 1 LIMIT 3",
    }
    with db.engine.connect() as c:
        values = {name: [row[0] for row in c.execute(text(sql))] for name, sql in queries.items()}
    values["fmt"] = ["json", "pdf"]
    return {name: found for name, found in values.items() if found}


@pytest.fixture
def demo_data(app, db) -> dict[str, list]:
    from demo.seed import Summary, seed
    from labels.keys import ensure_key

    ensure_key(app.config["GMP_SETTINGS"].signing_key)
    with app.app_context():
        assert isinstance(seed(app), Summary)
    return known_values(db)


@pytest.fixture
def tokens(client, make_user, make_site, demo_data) -> dict[str, str]:
    make_site("HOSP1", "treatment")
    out = {}
    for role in ROLES:
        person = make_user(f"st{role}", role, site="HOSP1" if role == "clinician" else "CLEAN1")
        response = client.post("/api/v1/auth/tokens", json={
            "username": person.username, "password": person.password})
        assert response.status_code == 201
        out[role] = response.get_json()["token"]
    return out


@pytest.mark.slow
def test_every_operation_for_every_role_answers_without_5xx_and_as_documented(
    app, tokens, demo_data
):
    # Imported here: schemathesis takes seconds to import, paid only when this test runs.
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    checked: list[str] = []
    for operation in operations:
        strategies = [
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        ]
        names = [p.name for p in operation.path_parameters]
        if names and all(name in demo_data for name in names):
            strategies.append(st.fixed_dictionaries(
                {name: st.sampled_from(demo_data[name]) for name in names}
            ).flatmap(lambda known, op=operation: op.as_strategy(
                GenerationMode.POSITIVE, path_parameters=known)))
        strategy = st.one_of(strategies)

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def call_as_every_role(case) -> None:
            for role in ROLES:
                case.call_and_validate(
                    headers={"Authorization": f"Bearer {tokens[role]}"},
                    checks=[not_a_server_error, response_schema_conformance],
                )

        call_as_every_role()
        checked.append(operation.label)
    assert len(checked) == len(operations)
