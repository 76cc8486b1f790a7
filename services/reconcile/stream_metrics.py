"""What the campaign streams and retention do, on reconcile's registry (``/metrics``).

Counted after the transaction that made each count true committed (a retried batch is not counted twice).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

CHANGE_OUTCOMES = ("upserted", "unchanged", "deleted", "stale")
LINK_OUTCOMES = ("linked", "pending", "dropped")
PURGED = ("unmatched_ids", "pending_links", "runs", "staging", "withdrawn_ids")


class StreamMetrics:
    def __init__(self, registry: Any | None) -> None:
        self._changes = Counter(
            "ab_recipient_changes_total",
            "recipient-changes applied, by outcome (upserted; unchanged: newer but the row was already so; deleted; "
            "stale: older than the recipient's last change).",
            ["outcome"],
            registry=registry,
        )
        self._links = Counter(
            "ab_visitor_links_total",
            "visitor-links received, by outcome (linked; pending: recipient not known yet; dropped: recipient "
            "deleted).",
            ["outcome"],
            registry=registry,
        )
        self._rematched = Counter(
            "ab_stream_rematched_ids_total",
            "Unmatched IDs that joined their lists as soon as a recipient change or a click concerned them.",
            ["stream"],
            registry=registry,
        )
        self._purged = Counter(
            "ab_retention_purged_total",
            "Rows removed by the retention job, by kind (unmatched_ids, pending_links, runs, staging, withdrawn_ids).",
            ["kind"],
            registry=registry,
        )
        for outcome in CHANGE_OUTCOMES:
            self._changes.labels(outcome)
        for outcome in LINK_OUTCOMES:
            self._links.labels(outcome)
        for stream in ("recipient-changes", "visitor-links"):
            self._rematched.labels(stream)
        for kind in PURGED:
            self._purged.labels(kind)

    def changes(self, counts: dict[str, int]) -> None:
        for outcome in CHANGE_OUTCOMES:
            self._changes.labels(outcome).inc(counts.get(outcome, 0))

    def links(self, counts: dict[str, int]) -> None:
        for outcome in LINK_OUTCOMES:
            self._links.labels(outcome).inc(counts.get(outcome, 0))

    def rematched(self, stream: str, ids: int) -> None:
        self._rematched.labels(stream).inc(ids)

    def purged(self, counts: dict[str, int]) -> None:
        for kind in PURGED:
            self._purged.labels(kind).inc(counts.get(kind, 0))
