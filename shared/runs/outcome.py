"""Where a run stands: the one value every transition returns and every status event carries."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.runs.states import Direction, RunState


@dataclass(frozen=True, slots=True)
class RunOutcome:
    run_id: uuid.UUID
    direction: Direction
    state: RunState
    audience_id: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    match_rate: Mapping[str, float] | None = None
    reason: str | None = None
    files: tuple[str, ...] = ()

    def count(self, key: str) -> int:
        return int(self.counts.get(key, 0))


def int_map(raw: Any) -> dict[str, int]:
    """A jsonb column of counts as a dict of ints (asyncpg hands jsonb over as text); other values dropped."""
    data = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(data, dict):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def match_rate(direction: str, id_type: str | None, counts: Mapping[str, int]) -> dict[str, float] | None:
    """An import's share of valid IDs received that matched a recipient, per ID type (None: nothing to rate).
    Exports resolve recipients to IDs rather than match IDs: they have no match rate."""
    if direction != "import" or id_type is None:
        return None
    valid = counts.get("received", 0) - counts.get("invalid", 0)
    if valid <= 0:
        return None
    return {id_type: round(counts.get("matched", 0) / valid, 4)}
