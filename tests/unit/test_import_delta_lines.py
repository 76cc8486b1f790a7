"""A delta's IDs travel as one text each, an ID a line: only valid IDs, which split back exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.reconcile.import_delta import _lines

# What shared.ids accepts in a valid ID: printable ASCII, no whitespace, never empty.
_VALID = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@given(st.lists(_VALID, max_size=50))
def test_valid_ids_split_back_as_postgres_splits_them(ids: list[str]) -> None:
    text = _lines(ids)
    # string_to_array(text, E'\n') gives no element for an empty text, else the parts.
    assert (text.split("\n") if text else []) == ids


@pytest.mark.parametrize("ids", [[""], ["a", ""], ["a\nb"], ["a", "b\n"]])
def test_an_id_that_would_not_split_back_is_refused(ids: list[str]) -> None:
    with pytest.raises(ValueError, match="no line break"):
        _lines(ids)
