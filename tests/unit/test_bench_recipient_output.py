"""The recipient_changes benchmark's output check: exact tables pass, any difference is named."""

from __future__ import annotations

import dataclasses

import pytest

from shared.ids import declared_key
from tests.bench.output_checks import BenchOutputError, require
from tests.bench.recipient_output import expected_table, table_mismatches


def test_the_expected_table_is_recipients_one_to_n_at_the_last_generation() -> None:
    table = expected_table(500)
    assert (table.rows, table.lowest, table.highest, table.as_expected) == (500, 1, 500, 500)
    assert table.highest_key == declared_key("p500.g2@example.com", "sha256")
    assert (table.versions, table.newest_versions) == (500, 500)
    assert table_mismatches(table, table) == []


@pytest.mark.parametrize(
    "wrong",
    [
        {"rows": 499},
        {"highest": 501},
        {"as_expected": 499},  # one row still holds generation 1 (an older change won)
        {"lowest_key": declared_key("p1.g1@example.com", "sha256")},
        {"newest_versions": 0},
    ],
)
def test_any_difference_fails_loudly(wrong: dict[str, object]) -> None:
    expected = expected_table(500)
    problems = table_mismatches(expected, dataclasses.replace(expected, **wrong))  # type: ignore[arg-type]
    assert [p.split(":")[0] for p in problems] == list(wrong)
    with pytest.raises(BenchOutputError, match="no figure"):
        require(problems, "recipient_changes")
