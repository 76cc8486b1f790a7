"""The run lifecycle table: what it allows, what it refuses."""

from __future__ import annotations

import re

import pytest

from shared.messages import AudienceSyncStatus
from shared.runs.states import (
    ENDED_STATES,
    LIVE_STATES,
    RUN_STATES,
    TRANSITIONS,
    IllegalTransition,
    check_transition,
    may_move,
    sources_of,
)
from shared.settings import REPO_ROOT


def test_every_state_has_a_row_and_moves_only_to_known_states() -> None:
    assert set(TRANSITIONS) == {None, *RUN_STATES}
    for targets in TRANSITIONS.values():
        assert targets <= set(RUN_STATES)


def test_the_status_event_speaks_the_lifecycle_states() -> None:
    assert set(AudienceSyncStatus.model_fields["state"].annotation.__args__) == set(RUN_STATES)  # type: ignore[union-attr]


def test_live_and_ended_split_the_states() -> None:
    assert set(RUN_STATES) == LIVE_STATES | ENDED_STATES
    assert not LIVE_STATES & ENDED_STATES


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("succeeded", "progress"),
        ("succeeded", "failed"),
        ("succeeded", "started"),
        ("cancelled", "progress"),
        ("cancelled", "failed"),
        ("succeeded", "cancelled"),
        ("failed", "blocked"),
        ("progress", "started"),
        (None, "succeeded"),
    ],
)
def test_illegal_moves_are_refused_with_a_typed_error(current: str | None, target: str) -> None:
    assert not may_move(current, target)  # type: ignore[arg-type]
    with pytest.raises(IllegalTransition) as refused:
        check_transition(current, target, run_id="r1")  # type: ignore[arg-type]
    assert refused.value.context == {"run_id": "r1", "current": current, "target": target}


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (None, "started"),
        ("started", "progress"),
        ("progress", "progress"),
        ("progress", "succeeded"),
        ("progress", "blocked"),
        ("blocked", "succeeded"),
        ("blocked", "progress"),  # an export released by an operator goes back to work
        ("progress", "cancelled"),
        ("blocked", "cancelled"),
        ("failed", "cancelled"),
        ("failed", "succeeded"),
        ("started", "failed"),
    ],
)
def test_the_lifecycle_moves(current: str | None, target: str) -> None:
    check_transition(current, target)  # type: ignore[arg-type]


def test_sources_are_the_table_read_backwards() -> None:
    for target in RUN_STATES:
        assert set(sources_of(target)) == {s for s in RUN_STATES if target in TRANSITIONS[s]}
    assert "succeeded" not in sources_of("progress")


def test_the_readme_shows_the_table_as_it_is() -> None:
    """README "Runs" is where operators read the lifecycle: it must say what the code allows."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("| from | may move to |") :].split("\n\n", 1)[0]
    shown: dict[str | None, set[str]] = {}
    for row in section.splitlines()[2:]:
        source, targets = (cell.strip() for cell in row.strip("|").split("|"))
        key = None if source == "(opened)" else source.strip("`")
        shown[key] = set(re.findall(r"`([a-z]+)`", targets))
    assert shown == {k: set(v) for k, v in TRANSITIONS.items()}
