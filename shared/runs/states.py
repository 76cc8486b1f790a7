"""A run's states and the moves between them: the one table every service follows.

A run is one import (a platform segment's delivery into a campaign list) or one export (a list shared as a
platform audience). Every change of a run's state, in Postgres or on ``audience-sync-status``, is checked
against :data:`TRANSITIONS`; a move the table does not allow is refused with :class:`IllegalTransition`.
A new state is one line here (and the ``run`` table's CHECK constraint).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, get_args

from shared.errors import PermanentError

Direction = Literal["import", "export"]
RunState = Literal["started", "progress", "uploaded", "succeeded", "partial", "failed", "blocked", "cancelled"]
RUN_STATES: Final[tuple[RunState, ...]] = get_args(RunState)

# from → the states a run may move to. ``None``: the run is being opened (no state yet).
# fmt: off
TRANSITIONS: Final[Mapping[RunState | None, frozenset[RunState]]] = {
    None:        frozenset({"started", "progress", "failed", "blocked"}),
    "started":   frozenset({"progress", "succeeded", "failed", "blocked", "cancelled"}),
    "progress":  frozenset({"progress", "uploaded", "succeeded", "failed", "blocked", "cancelled"}),
    "uploaded":  frozenset({"succeeded", "partial", "failed"}),   # an export's files await the platform's receipts
    "blocked":   frozenset({"succeeded", "progress", "failed", "cancelled"}),   # released (an export: to work)
    "failed":    frozenset({"failed", "succeeded", "uploaded", "cancelled"}),   # an export retried (staged)
    "partial":   frozenset(),                          # an export the platform applied in part
    "succeeded": frozenset(),
    "cancelled": frozenset(),                          # given up by an operator (audience-bridge cancel)
}
# fmt: on

# Work is under way: batches are arriving, files being written, or (``uploaded``) the platform processing them.
LIVE_STATES: Final[frozenset[RunState]] = frozenset({"started", "progress", "uploaded"})
# The run stopped by itself; only an operator moves it on (release, retry).
ENDED_STATES: Final[frozenset[RunState]] = frozenset({"succeeded", "partial", "failed", "blocked", "cancelled"})


class IllegalTransition(PermanentError):
    """A run was asked to move to a state the lifecycle does not allow from where it is."""


def may_move(current: RunState | None, target: RunState) -> bool:
    return target in TRANSITIONS[current]


def check_transition(current: RunState | None, target: RunState, *, run_id: object = None) -> None:
    """Refuse a move the table does not allow (``current`` None: the run does not exist yet)."""
    if not may_move(current, target):
        raise IllegalTransition(
            "a run cannot move to this state from where it is",
            run_id=str(run_id) if run_id is not None else None,
            current=current,
            target=target,
        )


def sources_of(target: RunState) -> tuple[RunState, ...]:
    """The stored states a run may move to ``target`` from (for an UPDATE's WHERE clause)."""
    return tuple(s for s in RUN_STATES if target in TRANSITIONS[s])
