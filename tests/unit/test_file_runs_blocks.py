"""A block of records handed to its runs at once (``_take_block``) gives every run exactly the IDs, in the order and
as adds or removes, that taking its lines one by one (``_take``) gives: for full files (no removals, the fast
path that builds no key per line) and for files with removals alike."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.file_runs import _take, _take_block
from shared.formats.outbound import RecordBlock


@dataclass
class _Recorder:
    taken: list[tuple[str, str]] = field(default_factory=list)

    async def add(self, one_id: str) -> None:
        self.taken.append(("add", one_id))

    async def remove(self, one_id: str) -> None:
        self.taken.append(("remove", one_id))

    async def extend(self, ids: Sequence[str], *, removes: bool = False) -> None:
        self.taken.extend(("remove" if removes else "add", i) for i in ids)


@dataclass
class _Audience:
    audience_id: str


@dataclass
class _Run:
    audience: _Audience
    batches: _Recorder = field(default_factory=_Recorder)


# Segment 1 feeds run A, 2 run B, 3 both, 4 nobody (unmapped).
_FEEDS = {1: "A", 2: "B", 3: "AB", 4: ""}


class _Planner:
    """What ``_take_block`` asks of ``RunPlanner``: the runs a (segments, removed) pair joins and leaves."""

    def __init__(self) -> None:
        self.runs = {name: _Run(_Audience(name)) for name in "AB"}

    async def plan(self, key: tuple[tuple[int, ...], tuple[int, ...]]) -> tuple[list[Any], list[Any]]:
        segments, removed = key
        joins = [self.runs[name] for s in segments for name in _FEEDS[s]]
        leaves = [self.runs[name] for s in removed for name in _FEEDS[s]]
        return joins, leaves


def _taken(planner: _Planner) -> dict[str, list[tuple[str, str]]]:
    return {name: run.batches.taken for name, run in planner.runs.items()}


_SEGMENTS = st.sampled_from([(1,), (2,), (1, 2), (2, 1), (4,), (1, 4), (3,), (2, 4)])


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.tuples(_SEGMENTS, st.sampled_from([(), (), (), (2,), (1,)])), min_size=1, max_size=40),
    with_removals=st.booleans(),
)
def test_a_block_feeds_each_run_what_its_lines_one_by_one_do(
    lines: list[tuple[tuple[int, ...], tuple[int, ...]]], with_removals: bool
) -> None:
    segments = [s for s, _ in lines]
    removed = [r if with_removals else () for _, r in lines]
    block = RecordBlock(7, [f"user{i}" for i in range(len(lines))], segments, removed)

    async def both() -> tuple[dict[str, list[tuple[str, str]]], dict[str, list[tuple[str, str]]]]:
        at_once, one_by_one = _Planner(), _Planner()
        await _take_block(at_once, block)  # type: ignore[arg-type]
        for record in block.records():
            await _take(one_by_one, record)  # type: ignore[arg-type]
        return _taken(at_once), _taken(one_by_one)

    at_once, one_by_one = asyncio.run(both())
    assert at_once == one_by_one


def test_a_full_block_feeding_two_runs_splits_its_users_by_segment() -> None:
    block = RecordBlock(1, ["u1", "u2", "u3", "u4"], [(1,), (2,), (4,), (1,)], [(), (), (), ()])
    planner = _Planner()
    asyncio.run(_take_block(planner, block))  # type: ignore[arg-type]
    assert _taken(planner) == {"A": [("add", "u1"), ("add", "u4")], "B": [("add", "u2")]}
