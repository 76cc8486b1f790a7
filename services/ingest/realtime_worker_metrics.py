"""The receiver processes' metrics, summed into the service's ``/metrics``.

Each receiver process (REALTIME_WORKERS) counts in a registry of its own and reports a snapshot of it to
the service every ``REPORT_INTERVAL_S`` (and once more when it stops). Counters and histograms are sums of
increments, so the service's figure is the sum of the latest snapshots, sample by sample (bucket counts,
``_count``, ``_sum``, ``_total``); the ``_created`` timestamps are the service's own. A process that is
replaced starts from 0, which Prometheus reads as a counter reset, as it would a restarted service. Chosen
over prometheus_client's multiprocess mode, which needs an environment variable and a shared directory set
before the first import, and which would change every metric of ingest, not only these.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

REPORT_INTERVAL_S: Final = 1.0

SampleKey = tuple[str, str, tuple[tuple[str, str], ...]]  # family, sample name, sorted labels
Snapshot = dict[SampleKey, float]


def snapshot(registry: CollectorRegistry) -> list[list[object]]:
    """A registry's counter and histogram samples, as JSON-ready rows ``[family, sample, labels, value]``."""
    rows: list[list[object]] = []
    for family in registry.collect():
        if family.type not in ("counter", "histogram"):
            continue
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                rows.append([family.name, sample.name, dict(sample.labels), sample.value])
    return rows


def parse_snapshot(rows: Iterable[object]) -> Snapshot:
    """A reported snapshot back into its samples; rows that are not ``[str, str, {str: str}, number]`` are
    a ValueError (a process that is not a receiver wrote on the channel)."""
    parsed: Snapshot = {}
    for row in rows:
        if not (isinstance(row, list) and len(row) == 4):
            raise ValueError(f"not a metric sample: {row!r}")
        family, name, labels, value = row
        if not (isinstance(family, str) and isinstance(name, str) and isinstance(labels, dict)):
            raise ValueError(f"not a metric sample: {row!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"not a metric value: {row!r}")
        key_labels = tuple(sorted((str(k), str(v)) for k, v in labels.items()))
        parsed[(family, name, key_labels)] = float(value)
    return parsed


class SummedMetrics:
    """A collector for the service's registry: ``template``'s families (the receiver's metrics at 0, with
    their help and type) with the latest snapshot of every receiver process added in."""

    def __init__(self, template: CollectorRegistry, latest: Mapping[int, Snapshot]) -> None:
        self._template = template
        self._latest = latest  # receiver process index -> its latest snapshot (updated by the supervisor)

    def describe(self) -> Iterator[Metric]:
        yield from self._template.collect()

    def collect(self) -> Iterator[Metric]:
        totals: Snapshot = {}
        for snap in self._latest.values():
            for key, value in snap.items():
                totals[key] = totals.get(key, 0.0) + value
        for family in self._template.collect():
            summed = Metric(family.name, family.documentation, family.type, family.unit)
            seen: set[SampleKey] = set()
            for sample in family.samples:
                key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                seen.add(key)
                summed.add_sample(sample.name, sample.labels, sample.value + totals.get(key, 0.0))
            # Label values only the processes have seen (a skip reason), after the template's.
            for key in sorted(k for k in totals if k[0] == family.name and k not in seen):
                summed.add_sample(key[1], dict(key[2]), totals[key])
            yield summed
