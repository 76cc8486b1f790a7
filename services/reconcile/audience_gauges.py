"""Per-audience gauges of the last applied run, for the alerts on match rate and size changes.

Read from Postgres (:mod:`services.reconcile.insights_queries`), not kept in memory where runs end: imports
end in reconcile, exports in publish, and a restart must not forget the previous run. Every
``AUDIENCE_GAUGES_REFRESH_S`` reconcile reads each audience's last two applied runs and sets:

* ``ab_audience_size`` / ``ab_audience_previous_size``: the size the last run left, and the size before it;
* ``ab_audience_match_rate`` / ``ab_audience_previous_match_rate``: per ID type, the last two import runs'.

A deleted audience's series go away at the next refresh. Values are computed first and swapped in without
an ``await`` in between, so a scrape never sees half a refresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from services.reconcile.insights_queries import RunPoint, audiences, history
from shared.db import acquire
from shared.logging import get_logger
from shared.retry import is_transient

log = get_logger(__name__)


@dataclass(slots=True)
class AudienceValues:
    """What the gauges say of one audience (None: no run to tell)."""

    direction: str
    size: int | None = None
    previous_size: int | None = None
    match_rate: dict[str, float] = field(default_factory=dict)
    previous_match_rate: dict[str, float] = field(default_factory=dict)


def audience_values(direction: str, points: list[RunPoint]) -> AudienceValues:
    """From an audience's applied runs (oldest first): the last one's size and the size before it, and per ID
    type the last two match rates (the runs that rated it: a run of another ID type does not count)."""
    values = AudienceValues(direction)
    if points:
        last = points[-1]
        values.size = last.size
        values.previous_size = max(0, last.size - last.added + last.removed)
    for point in reversed(points):
        for id_type, rate in point.match_rate.items():
            if id_type not in values.match_rate:
                values.match_rate[id_type] = rate
            elif id_type not in values.previous_match_rate:
                values.previous_match_rate[id_type] = rate
    return values


class AudienceGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        by_audience = ["direction", "audience_id"]
        by_type = ["audience_id", "id_type"]
        self._size = Gauge(
            "ab_audience_size", "Size the audience's last applied run left.", by_audience, registry=registry
        )
        self._prev_size = Gauge(
            "ab_audience_previous_size",
            "Size of the audience before its last applied run.",
            by_audience,
            registry=registry,
        )
        self._rate = Gauge(
            "ab_audience_match_rate",
            "Match rate of the audience's last import run, per ID type.",
            by_type,
            registry=registry,
        )
        self._prev_rate = Gauge(
            "ab_audience_previous_match_rate",
            "Match rate of the audience's import run before its last one, per ID type.",
            by_type,
            registry=registry,
        )

    def swap(self, values: dict[str, AudienceValues]) -> None:
        """Replace every series with ``values`` (no await: a scrape sees all old or all new)."""
        for gauge in (self._size, self._prev_size, self._rate, self._prev_rate):
            gauge.clear()
        for audience_id, v in values.items():
            if v.size is not None:
                self._size.labels(v.direction, audience_id).set(v.size)
            if v.previous_size is not None:
                self._prev_size.labels(v.direction, audience_id).set(v.previous_size)
            for id_type, rate in v.match_rate.items():
                self._rate.labels(audience_id, id_type).set(rate)
            for id_type, rate in v.previous_match_rate.items():
                self._prev_rate.labels(audience_id, id_type).set(rate)


async def read_values(conn: Any) -> dict[str, AudienceValues]:
    return {
        a.audience_id: audience_values(a.direction, await history(conn, a.audience_id, limit=50))
        for a in await audiences(conn)
    }


async def refresh_periodically(pool: Callable[[], Any], gauges: AudienceGauges, interval_s: float) -> None:
    """Refresh the gauges now and every ``interval_s`` (on the status page's read-only pool, when it is up)."""
    while True:
        current = pool()
        if current is not None:
            try:
                async with acquire(current) as conn:
                    values = await read_values(conn)
                gauges.swap(values)
            except Exception as exc:
                if not is_transient(exc) and not isinstance(exc, TimeoutError):
                    raise
                log.warning("audience_gauges_retry_later", error=type(exc).__name__)
        await asyncio.sleep(interval_s)
