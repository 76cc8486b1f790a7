"""What a benchmark's run must have produced, and the check that it did: a figure is only printed for work that
was done right. The comparisons are pure functions; the readers at the bottom fetch what Postgres and ecsim hold.

A list is checked by its count, lowest and highest member: members are unique per list (its primary key) and
the benchmarks' recipients are numbered consecutively, so a list with the expected count, lowest and highest
member holds exactly the expected recipients.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from shared.errors import BridgeError


class BenchOutputError(BridgeError):
    """A benchmark's output is wrong: its figure would time work that was not done (or done wrong)."""


@dataclass(frozen=True, slots=True)
class ListState:
    """A list's members (count, lowest, highest recipient) and its audience's kept unmatched IDs by reason."""

    members: int
    lowest: int | None
    highest: int | None
    unmatched: dict[str, int]


@dataclass(frozen=True, slots=True)
class ListExpectation:
    """An audience's list must hold recipients ``first`` .. ``first + members - 1`` and keep ``unmatched`` IDs
    (all with ``reason``)."""

    audience_id: str
    first: int
    members: int
    unmatched: int
    reason: str

    def state(self) -> ListState:
        last = self.first + self.members - 1
        return ListState(
            members=self.members,
            lowest=self.first if self.members else None,
            highest=last if self.members else None,
            unmatched={self.reason: self.unmatched} if self.unmatched else {},
        )


def import_expectations(n: int) -> list[ListExpectation]:
    """The import benchmark's files (tests/bench/import_bench.py): half ECIDs of recipients 1.., half hashed
    e-mails of the recipients after them; 90% of each half's IDs (of the first half's size) known."""
    half = n // 2
    matchable = half * 9 // 10
    return [
        ListExpectation("visitors-5001", 1, matchable, half - matchable, "unknown_ecid"),
        ListExpectation("emails-5002", half + 1, matchable, (n - half) - matchable, "unknown_declared_id"),
    ]


def list_mismatches(expected: Sequence[ListExpectation], actual: dict[str, ListState]) -> list[str]:
    """What differs between the lists expected and those found (empty: all exact)."""
    problems = []
    for want in expected:
        got = actual.get(want.audience_id)
        if got is None:
            problems.append(f"{want.audience_id}: no list found")
        elif got != want.state():
            problems.append(f"{want.audience_id}: expected {want.state()}, found {got}")
    return problems


def id_set_mismatches(expected: Iterable[str], actual: Iterable[str], *, examples: int = 3) -> list[str]:
    """What differs between the IDs expected and those found, each ID once (empty: the same set)."""
    counts = Counter(actual)
    wanted = set(expected)
    missing = [i for i in wanted if i not in counts]
    unexpected = [i for i in counts if i not in wanted]
    doubled = [i for i, c in counts.items() if c > 1]
    problems = []
    for what, ids in (("missing", missing), ("unexpected", unexpected), ("more than once", doubled)):
        if ids:
            problems.append(f"{len(ids)} IDs {what}, e.g. {sorted(ids)[:examples]}")
    return problems


def require(problems: list[str], what: str) -> None:
    """Fail the benchmark (no figure) when its output is wrong."""
    if problems:
        raise BenchOutputError(f"{what}: the output is wrong, no figure reported", problems=problems)


async def read_lists(conn: Any, audience_ids: Sequence[str]) -> dict[str, ListState]:
    """The lists of ``audience_ids`` as they are: members and kept unmatched IDs."""
    members = await conn.fetch(
        """SELECT sa.audience_id, count(lm.recipient_id) AS members,
                  min(lm.recipient_id) AS lowest, max(lm.recipient_id) AS highest
             FROM shared_audience sa LEFT JOIN list_member lm ON lm.list_id = sa.list_id
            WHERE sa.audience_id = ANY($1::text[])
            GROUP BY sa.audience_id""",
        list(audience_ids),
    )
    unmatched = await conn.fetch(
        """SELECT audience_id, reason, count(*) AS ids FROM unmatched_id
            WHERE audience_id = ANY($1::text[]) GROUP BY audience_id, reason""",
        list(audience_ids),
    )
    kept: dict[str, dict[str, int]] = {}
    for row in unmatched:
        kept.setdefault(row["audience_id"], {})[row["reason"]] = row["ids"]
    return {
        r["audience_id"]: ListState(r["members"], r["lowest"], r["highest"], kept.get(r["audience_id"], {}))
        for r in members
    }


async def check_lists(conn: Any, expected: Sequence[ListExpectation], what: str) -> None:
    require(list_mismatches(expected, await read_lists(conn, [e.audience_id for e in expected])), what)
