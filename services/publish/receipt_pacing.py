"""How long the receipt poller waits before its next poll (no I/O).

The platform processes inbound files hours later, so a poller that finds nothing backs off (doubling from
``EXPORT_RECEIPT_POLL_S`` to ``EXPORT_RECEIPT_POLL_MAX_S``) rather than calling it every second for two
days. But a platform may also answer within seconds (ecsim with no delay does): backing off from the first
empty poll then made a run wait up to ``EXPORT_RECEIPT_POLL_MAX_S`` after its receipt was there. So for
``EXPORT_RECEIPT_POLL_FAST_S`` after the latest upload still awaiting its receipt, polls stay at
``EXPORT_RECEIPT_POLL_S`` (a bound: at most ``POLL_FAST_S / POLL_S`` extra calls per data source per run),
and the backoff begins after.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PollPace:
    poll_s: float  # the shortest delay (EXPORT_RECEIPT_POLL_S)
    poll_max_s: float  # the longest (EXPORT_RECEIPT_POLL_MAX_S)
    fast_s: float  # how long after an upload polls stay at poll_s (EXPORT_RECEIPT_POLL_FAST_S)


def next_poll_delay(
    previous_s: float,
    pace: PollPace,
    *,
    progressed: bool,
    awaiting: int,
    awaited_before: int,
    newest_upload_age_s: float | None,
) -> float:
    """The delay before the next poll, given the last one's. ``awaiting``: files awaiting a receipt now,
    ``awaited_before``: at the poll before; ``newest_upload_age_s``: how long ago the most recently uploaded
    of them was written (None: none awaits)."""
    if progressed or awaiting == 0 or awaiting > awaited_before:
        return pace.poll_s
    if newest_upload_age_s is not None and newest_upload_age_s < pace.fast_s:
        return pace.poll_s
    return min(max(previous_s, pace.poll_s) * 2, pace.poll_max_s)
