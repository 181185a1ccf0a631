"""schemathesis against the running application, for every role (issue 14).

The OpenAPI document is loaded from the application itself and every operation is
called with generated requests (valid and invalid ones) under a bearer token of each
role. No answer may be a 5xx, and every answer must match the response schema the
document declares (errors as application/problem+json included). Examples are
bounded so that the run stays short; CI's derandomised Hypothesis profile applies.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROLES = ("operator", "qc", "qa", "clinician", "admin")
EXAMPLES_PER_OPERATION = 4


@pytest.fixture
def tokens(client, make_user, make_site) -> dict[str, str]:
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
def test_every_operation_for_every_role_answers_without_5xx_and_as_documented(app, tokens):
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
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

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
