"""What reconcile measures, on the service's registry (``/metrics``). Labels stay low-cardinality.

Importer and Exporter take a :class:`ReconcileMetrics`; :class:`NoReconcileMetrics` (their default) keeps
them usable in tests and tools that have no registry. Counts are recorded after the Postgres transaction
that made them true has committed, so a rolled-back or retried batch is never counted twice. Runs
(``ab_runs_total``) are counted where their status is reported, by :class:`shared.runs.reporter.RunReporter`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from prometheus_client import Counter

# The per-batch count keys that are IDs seen, as opposed to list changes.
ID_OUTCOMES = ("received", "matched", "unmatched", "invalid")


class ReconcileMetrics(Protocol):
    def import_batch(self, id_type: str, counts: Mapping[str, int]) -> None:
        """One membership batch applied: its received/matched/unmatched/invalid IDs and added/removed members."""

    def members_changed(self, added: int, removed: int) -> None:
        """List members added or removed outside a batch (a full snapshot applied at the end of its run)."""

    def export_excluded(self, count: int) -> None:
        """Recipients of an export run left out because they have no ID for the data source."""


class NoReconcileMetrics:
    def import_batch(self, id_type: str, counts: Mapping[str, int]) -> None:
        pass

    def members_changed(self, added: int, removed: int) -> None:
        pass

    def export_excluded(self, count: int) -> None:
        pass


class PrometheusReconcileMetrics:
    def __init__(self, registry: Any) -> None:
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
        # Series exist at 0 from the start, so rate() and absent-vs-zero alerts work before the first batch.
        for id_type in ("ecid", "declared"):
            for outcome in ID_OUTCOMES:
                self._ids.labels(id_type, outcome)
        for change in ("added", "removed"):
            self._members.labels(change)

    def import_batch(self, id_type: str, counts: Mapping[str, int]) -> None:
        for outcome in ID_OUTCOMES:
            self._ids.labels(id_type, outcome).inc(counts.get(outcome, 0))
        self.members_changed(counts.get("added", 0), counts.get("removed", 0))

    def members_changed(self, added: int, removed: int) -> None:
        self._members.labels("added").inc(added)
        self._members.labels("removed").inc(removed)

    def export_excluded(self, count: int) -> None:
        self._excluded.inc(count)
