"""ecsim's inbound processing receipts: what the platform reports per processed file, per data source, newest
last, listed the way its ``/datasources/{id}/history/inbound`` does (search, sort, pages)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from services.ecsim.store_errors import Json
from services.ecsim.store_inputs import _copy
from services.ecsim.store_listing import Listing, ListParams, arrange


class ReceiptLog:
    """Receipts by data source id; the store checks the data source exists before it asks."""

    def __init__(self, clock: Callable[[], int]) -> None:
        self._clock = clock
        self._by_source: dict[int, list[Json]] = {}

    def add(self, data_source_id: int, receipt: Mapping[str, Any]) -> Json:
        """Record the outcome of processing inbound files of a data source (newest last).

        The inbound processor writes the receipt fields the platform reports, in camelCase:
        ``dataFileName``, ``recordsReceived``, ``formatErrors``, ``invalidAamIds``, ``noMatchingAamId``,
        ``noTraitRealized``, ``recordsProcessed``, ``storedRecords``, ``totalRemovedTraits``,
        ``startTime``/``endTime`` (epoch ms), ``success``. Only ``dataFileName`` is interpreted (filter).
        """
        stored = _copy(dict(receipt))
        stored.setdefault("dataSourceId", data_source_id)
        stored.setdefault("receivedTime", self._clock())
        self._by_source.setdefault(data_source_id, []).append(stored)
        return _copy(stored)

    def history(
        self, data_source_id: int, params: ListParams = ListParams(), *, data_file_name: str | None = None
    ) -> Listing:
        receipts = [
            _copy(r)
            for r in self._by_source.get(data_source_id, ())
            if data_file_name is None or r.get("dataFileName") == data_file_name
        ]
        return arrange(receipts, params)

    def forget(self, data_source_id: int) -> None:
        """A deleted data source's receipts go with it."""
        self._by_source.pop(data_source_id, None)

    def snapshot(self) -> dict[str, list[Json]]:
        return {str(k): [_copy(r) for r in v] for k, v in self._by_source.items()}
