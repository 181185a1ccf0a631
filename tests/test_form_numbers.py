"""One number parser for every page form (issue 15): step values, QC results and
corrections go through ``gmp_mes.schemas.form_number``, the collection form's volume too;
a decimal comma (the site's locale) and the ISO/point form give the same value."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gmp_mes.schemas import form_number
from identity.schemas import CollectionFormSchema

# Two decimals at most, as people type measured values.
amounts = st.decimals(min_value="0.01", max_value="4999.99", places=2, allow_nan=False,
                      allow_infinity=False)


def _collection_volume(text: str) -> object:
    loaded = CollectionFormSchema(partial=True).load(
        {"volume_ml": text, "collected_at": datetime(2026, 12, 1, 8, 30).isoformat()},
        partial=True, unknown="exclude")
    return loaded["volume_ml"]


@given(amounts)
def test_a_number_in_the_site_locale_and_in_iso_form_parse_the_same(amount) -> None:
    point = f"{amount:.2f}"
    comma = point.replace(".", ",")
    assert form_number(point) == form_number(comma) == float(amount)
    assert form_number(f" {comma} ") == float(amount)
    assert _collection_volume(point) == _collection_volume(comma) == float(amount)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1_000", "1.234,5", "1,2,3", "25O",
                                  "0x10", "1e999"])
def test_text_that_is_not_a_plain_number_comes_back_for_the_refusal(text: str) -> None:
    assert form_number(text) == text


def test_empty_is_none() -> None:
    assert form_number("  ") is None
