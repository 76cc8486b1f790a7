"""What a service says about a run's moves: the status event on ``audience-sync-status``, and the run metric.

Each service reports the moves it makes; a run is counted in ``ab_runs_total`` by the service in which it
reached an ended state (``succeeded``, ``failed``, ``blocked``), once per state, so that summed over the
services every run counts once where it ended. Report only after the transaction that made the move has
committed: a rolled-back or retried batch must neither announce nor count anything.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter

from shared.kafka import Producer
from shared.logging import get_logger, redact_text
from shared.messages import AudienceSyncStatus, RunCounts
from shared.runs.outcome import RunOutcome
from shared.runs.states import ENDED_STATES, Direction, RunState
from shared.topics import AUDIENCE_SYNC_STATUS, topic_name

log = get_logger(__name__)

MAX_REASON = 2000


class RunMetric:
    """``ab_runs_total{direction, state}``: runs by the ended state they reached in this service."""

    # A run rejected batch by batch (every batch fails the same way) is one failed run, not one per batch:
    # the last few (run, state) counted are remembered. Bounded, so a long life cannot grow it.
    _SEEN_MAX = 4096

    def __init__(
        self,
        registry: CollectorRegistry,
        ends: Iterable[tuple[Direction, RunState]],
        on_counted: Callable[[RunOutcome], None] | None = None,
    ) -> None:
        self._on_counted = on_counted
        self._runs = Counter(
            "ab_runs_total",
            "Runs by direction and the ended state (succeeded, failed, blocked) they reached in this service.",
            ["direction", "state"],
            registry=registry,
        )
        # Series exist at 0 from the start, so rate() and absent-vs-zero alerts work before the first run.
        for direction, state in ends:
            self._runs.labels(direction, state)
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    def ended(self, run: RunOutcome) -> None:
        if run.state not in ENDED_STATES:
            return
        key = (run.direction, run.state, str(run.run_id))
        if key in self._seen:
            return
        self._seen[key] = None
        if len(self._seen) > self._SEEN_MAX:
            self._seen.popitem(last=False)
        self._runs.labels(run.direction, run.state).inc()
        if self._on_counted is not None:
            self._on_counted(run)


class RunReporter:
    """Announces runs' moves for one service (and counts those that end in it, given a registry)."""

    def __init__(
        self,
        producer: Producer,
        *,
        service: str,
        topic_prefix: str,
        registry: CollectorRegistry | None = None,
        ends: Iterable[tuple[Direction, RunState]] = (),
        on_counted: Callable[[RunOutcome], None] | None = None,
    ) -> None:
        """``on_counted`` is called with each run exactly when it is counted in ``ab_runs_total`` (a
        service's own run metric fed from there cannot disagree with it); it needs the ``registry``."""
        if on_counted is not None and registry is None:
            raise ValueError("on_counted is called when a run is counted: give the registry it is counted on")
        self._producer = producer
        self._service = service
        self._topic = topic_name(topic_prefix, AUDIENCE_SYNC_STATUS)
        self._metric = RunMetric(registry, ends, on_counted) if registry is not None else None

    async def report(self, run: RunOutcome) -> AudienceSyncStatus:
        counts = RunCounts.model_validate({k: v for k, v in run.counts.items() if k in RunCounts.model_fields})
        event = AudienceSyncStatus(
            run_id=run.run_id,
            direction=run.direction,
            audience_id=run.audience_id,
            state=run.state,
            counts=counts,
            match_rate=dict(run.match_rate) if run.match_rate else None,
            # A reason quotes errors, and errors quote DSNs and settings: no secret leaves in a status event.
            reason=redact_text(run.reason)[:MAX_REASON] if run.reason else None,
            service=self._service,
        )
        await self._producer.send_model(self._topic, event)
        # Counted once the event is out: a send that raised is retried with the whole batch.
        if self._metric is not None:
            self._metric.ended(run)
        log.info(
            "run_status",
            run_id=str(run.run_id),
            direction=run.direction,
            audience_id=run.audience_id,
            state=run.state,
            counts=counts.model_dump(),
            reason=run.reason,
        )
        return event


def import_ends() -> tuple[tuple[Direction, RunState], ...]:
    return tuple(("import", s) for s in sorted(ENDED_STATES))


def export_ends() -> tuple[tuple[Direction, RunState], ...]:
    return tuple(("export", s) for s in sorted(ENDED_STATES))
