"""Reading one-column COPY text output: any chunking, any value, exactly the values stored."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.copy_text import CopyFormatError, CopyTextLines, unescape_copy_value


def copy_escape(value: str) -> str:
    """What Postgres' COPY TO (text format, TAB delimiter) writes for a text value (CopyAttributeOutText)."""
    specials = {"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    return "".join(specials.get(c, c) for c in value)


def copy_output(values: list[str]) -> bytes:
    return "".join(copy_escape(v) + "\n" for v in values).encode()


def feed_in_chunks(data: bytes, cuts: list[int]) -> list[str]:
    reader = CopyTextLines()
    values: list[str] = []
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        values += reader.feed(data[start:cut])
        start = cut
    values += reader.feed(data[start:])
    values += reader.finish()
    return values


@given(
    st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=40), max_size=50),
    st.lists(st.integers(0, 10_000)),
)
def test_values_come_back_exactly_whatever_the_chunks(values: list[str], cuts: list[int]) -> None:
    assert feed_in_chunks(copy_output(values), cuts) == values


def test_hashes_and_ecids_come_back_without_any_work() -> None:
    values = ["a" * 64, "0" * 38, "CRM\\42"]
    assert feed_in_chunks(copy_output(values), [3, 70, 71]) == values


def test_a_last_line_without_its_break_is_still_a_value() -> None:
    reader = CopyTextLines()
    assert reader.feed(b"one\ntw") == ["one"]
    assert reader.finish() == ["tw"]
    assert reader.finish() == []


@pytest.mark.parametrize(
    ("raw", "problem"), [(b"\\N\n", "NULL"), (b"bad\\q\n", "unexpected escape"), (b"\xff\n", "UTF-8")]
)
def test_output_one_text_column_cannot_produce_is_refused(raw: bytes, problem: str) -> None:
    with pytest.raises(CopyFormatError, match=problem):
        CopyTextLines().feed(raw)


def test_unescape_undoes_each_escape() -> None:
    assert unescape_copy_value(r"a\\b\tc\nd") == "a\\b\tc\nd"
    assert unescape_copy_value("plain") == "plain"
