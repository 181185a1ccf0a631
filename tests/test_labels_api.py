"""Labels API edge: roles, validation (422, never 500), OpenAPI documentation."""

from __future__ import annotations

import pytest

from tests.helpers import assert_problem


@pytest.mark.requirement("21 CFR 11.10(d)")
def test_printing_needs_operator_or_clinician(make_user, login, anonymous) -> None:
    qc = login(make_user("quinn", "qc"))
    assert_problem(qc.get("/api/v1/items/ITM-AAAAAAAA/label?format=png"), 403, "forbidden_role")
    assert_problem(anonymous.get("/api/v1/items/ITM-AAAAAAAA/label"), 401, "unauthenticated")
    assert_problem(qc.get("/api/v1/labels/sheet?items=ITM-AAAAAAAA"), 403, "forbidden_role")


@pytest.mark.requirement("21 CFR 11.10(d)")
def test_voiding_needs_operator_or_qa(make_user, login) -> None:
    clinician = login(make_user("cleo", "clinician"))
    response = clinician.post(
        "/api/v1/items/ITM-AAAAAAAA/labels/LBL-AAAAAAAAAA/void", json={"reason": "damaged"}
    )
    assert_problem(response, 403, "forbidden_role")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("format=bmp", "format"),
        ("format=png&copies=0", "copies"),
        ("format=png&copies=101", "copies"),
        ("format=png&copies=many", "copies"),
        ("format=zpl&dpi=600", "dpi"),
        ("format=png&reprint=maybe", "reprint"),
        ("format=png&colour=red", "colour"),
    ],
)
def test_bad_print_options_are_422(make_user, login, query: str, field: str) -> None:
    operator = login(make_user("olga", "operator"))
    body = assert_problem(
        operator.get(f"/api/v1/items/ITM-AAAAAAAA/label?{query}"), 422, "validation_error"
    )
    assert f"query.{field}" in body["errors"], body


@pytest.mark.requirement("EU GMP Annex 11 §12.4")
def test_reprint_without_reason_is_422(make_user, login) -> None:
    operator = login(make_user("olga", "operator"))
    for query in ("reprint=true", "reprint=true&reason=", "reprint=true&reason=%20%20"):
        body = assert_problem(
            operator.get(f"/api/v1/items/ITM-AAAAAAAA/label?format=png&{query}"),
            422,
            "validation_error",
        )
        assert "reason" in body["errors"], body


def test_void_needs_a_reason(make_user, login) -> None:
    operator = login(make_user("olga", "operator"))
    url = "/api/v1/items/ITM-AAAAAAAA/labels/LBL-AAAAAAAAAA/void"
    for body in ({}, {"reason": ""}, {"reason": "x", "extra": 1}):
        assert_problem(operator.post(url, json=body), 422, "validation_error")
    assert_problem(operator.post(url, data="not json"), 422)


def test_sheet_options_are_validated(make_user, login) -> None:
    operator = login(make_user("olga", "operator"))
    assert_problem(operator.get("/api/v1/labels/sheet"), 422, "validation_error")
    assert_problem(
        operator.get("/api/v1/labels/sheet?items=ITM-AAAAAAAA&paper=a3"), 422, "validation_error"
    )
    assert_problem(operator.get("/api/v1/labels/sheet?items=,,"), 422, "validation_error")
    many = ",".join(f"ITM-{n:08d}" for n in range(101))
    assert_problem(operator.get(f"/api/v1/labels/sheet?items={many}"), 422, "validation_error")


def test_openapi_documents_the_label_endpoints(anonymous) -> None:
    spec = anonymous.get("/api/v1/openapi.json").get_json()
    paths = spec["paths"]
    label = paths["/api/v1/items/{item_id}/label"]["get"]
    assert {p["name"] for p in label["parameters"]} >= {
        "format",
        "reprint",
        "reason",
        "workstation",
        "copies",
        "dpi",
    }
    assert set(label["responses"]["200"]["content"]) == {
        "image/png",
        "image/svg+xml",
        "application/pdf",
        "application/zpl",
    }
    assert "post" in paths["/api/v1/items/{item_id}/labels/{label_id}/void"]
    assert "get" in paths["/api/v1/labels/sheet"]
    assert "get" in paths["/api/v1/items/{item_id}/labels"]
