"""What reconcile measures, on the service's registry (``/metrics``). Labels stay low-cardinality.

Importer and Exporter take a :class:`ReconcileMetrics`; :class:`NoReconcileMetrics` (their default) keeps
them usable in tests and tools that have no registry. Counts are recorded after the Postgres transaction
that made them true has committed, so a rolled-back or retried batch is never counted twice.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

from prometheus_client import Counter

# The per-batch count keys that are IDs seen, as opposed to list changes.
ID_OUTCOMES = ("received", "matched", "unmatched", "invalid")


class ReconcileMetrics(Protocol):
    def run_finished(self, direction: str, state: str, run_id: object) -> None:
        """A run left reconcile's hands in ``state`` (import: succeeded, failed, blocked; export: failed,
        blocked, or progress = emitted to publish, which reports the end in ab_export_runs_total)."""

    def import_batch(self, id_type: str, counts: Mapping[str, int]) -> None:
        """One membership batch applied: its received/matched/unmatched/invalid IDs and added/removed members."""

    def members_changed(self, added: int, removed: int) -> None:
        """List members added or removed outside a batch (a full snapshot applied at the end of its run)."""

    def export_excluded(self, count: int) -> None:
        """Recipients of an export run left out because they have no ID for the data source."""


class NoReconcileMetrics:
    def run_finished(self, direction: str, state: str, run_id: object) -> None:
        pass

    def import_batch(self, id_type: str, counts: Mapping[str, int]) -> None:
        pass

    def members_changed(self, added: int, removed: int) -> None:
        pass

    def export_excluded(self, count: int) -> None:
        pass


class PrometheusReconcileMetrics:
    # A run rejected batch by batch (every batch fails the same way) is one failed run, not one per batch:
    # remember the last few run ids counted. Bounded so a long life cannot grow it.
    _SEEN_MAX = 4096

    def __init__(self, registry: Any) -> None:
        self._runs = Counter(
            "ab_runs_total",
            "Runs by direction and the state they left reconcile in (export progress: handed to publish).",
            ["direction", "state"],
            registry=registry,
        )
        self._ids = Counter(
            "ab_import_ids_total",
            "IDs of applied membership batches, by ID type and outcome (received, matched, unmatched, invalid).",
            ["id_type", "outcome"],
            registry=registry,
        )
        self._members = Counter(
            "ab_list_members_changed_total",
            "Campaign list members changed by imports, by change (added, removed).",
            ["change"],
            registry=registry,
        )
        self._excluded = Counter(
            "ab_export_ids_excluded_total",
            "Recipients of export runs left out for lack of an ID of the data source.",
            registry=registry,
        )
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        # Series exist at 0 from the start, so rate() and absent-vs-zero alerts work before the first run.
        for direction, states in (
            ("import", ("succeeded", "failed", "blocked")),
            ("export", ("progress", "failed", "blocked")),
        ):
            for state in states:
                self._runs.labels(direction, state)
        for id_type in ("ecid", "declared"):
            for outcome in ID_OUTCOMES:
                self._ids.labels(id_type, outcome)
        for change in ("added", "removed"):
            self._members.labels(change)

    def run_finished(self, direction: str, state: str, run_id: object) -> None:
        key = (direction, state, str(run_id))
        if key in self._seen:
            return
        self._seen[key] = None
        if len(self._seen) > self._SEEN_MAX:
            self._seen.popitem(last=False)
        self._runs.labels(direction, state).inc()

    def import_batch(self, id_type: str, counts: Mapping[str, int]) -> None:
        for outcome in ID_OUTCOMES:
            self._ids.labels(id_type, outcome).inc(counts.get(outcome, 0))
        self.members_changed(counts.get("added", 0), counts.get("removed", 0))

    def members_changed(self, added: int, removed: int) -> None:
        self._members.labels("added").inc(added)
        self._members.labels("removed").inc(removed)

    def export_excluded(self, count: int) -> None:
        self._excluded.inc(count)
