"""Page form helpers of the core (gmp_mes.schemas): what every domain's forms rely on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields
from werkzeug.datastructures import MultiDict

from gmp_mes.schemas import field_errors, form_fields, form_number


@pytest.mark.parametrize(("typed", "value"), [
    ("7.5", 7.5), ("7,5", 7.5), (" 250 ", 250.0), ("-0,25", -0.25), ("", None), ("  ", None),
    ("2OO", "2OO"), ("1,000.5", "1,000.5"),
])
def test_form_number_at_a_comma_site(typed: str, value: object) -> None:
    assert form_number(typed, ",") == value


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_form_number_reads_back_any_number_with_either_decimal_mark(number: float) -> None:
    typed = repr(number)
    assert form_number(typed, ",") == number
    assert form_number(typed.replace(".", ","), ",") == number
    assert form_number(typed, ".") == number


def test_form_fields_trims_and_leaves_out_empty_fields_and_the_csrf_token() -> None:
    form = MultiDict({"csrf_token": "t", "name": "  Ada ", "empty": "  ", "mrn": "M1"})
    assert form_fields(form) == {"name": "Ada", "mrn": "M1"}


def test_field_errors_are_lists_of_messages_per_field() -> None:
    class Form(Schema):
        born = fields.Date(required=True)
        name = fields.String(required=True)

    with pytest.raises(ValidationError) as caught:
        Form().load({"born": "yesterday"})
    errors = field_errors(caught.value)
    assert set(errors) == {"born", "name"}
    assert all(isinstance(m, str) for messages in errors.values() for m in messages)
