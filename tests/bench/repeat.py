"""A scenario's repetitions summed up: the median and the range of each figure (``BENCH_REPEAT`` runs, each on a
fresh stack, its floor measured in the same run, so every ratio compares runs minutes apart)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

DEFAULT_REPEAT = 3


def repeat_count(raw: str | None) -> int:
    """``BENCH_REPEAT``'s value: a whole number of runs, at least 1."""
    if raw is None or raw.strip() == "":
        return DEFAULT_REPEAT
    try:
        count = int(raw)
    except ValueError:
        raise ValueError(f"BENCH_REPEAT must be a whole number of runs, got {raw!r}") from None
    if count < 1:
        raise ValueError(f"BENCH_REPEAT must be at least 1, got {count}")
    return count


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _median(values: Sequence[float]) -> float:
    middle = statistics.median(values)
    return int(middle) if float(middle).is_integer() and all(isinstance(v, int) for v in values) else middle


def _merge(values: Sequence[Any]) -> tuple[Any, Any]:
    """(median, range) of one figure over the runs: numbers give their median and [lowest, highest], nested
    figures (phases) the same per key; anything else is kept when every run agrees, else listed."""
    if all(_is_number(v) for v in values):
        return _median(values), [min(values), max(values)]
    if all(isinstance(v, dict) for v in values):
        keys = [k for k in values[0] if all(k in v for v in values)]
        merged = {k: _merge([v[k] for v in values]) for k in keys}
        return {k: m for k, (m, _) in merged.items()}, {k: r for k, (_, r) in merged.items()}
    return (values[0], None) if all(v == values[0] for v in values) else (list(values), None)


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The repetitions of a scenario: each run's figures, their medians and their ranges."""
    if not runs:
        raise ValueError("no runs to summarise")
    median, spread = _merge(list(runs))
    return {"repeat": len(runs), "median": median, "range": spread, "runs": list(runs)}
