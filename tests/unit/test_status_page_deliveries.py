"""The status page's "Deliveries not imported": batches delivered for a data source no import audience takes
(filed unread), and rejected ones, with their reasons (issue 14, part 1)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from services.reconcile.status_json import snapshot_json
from services.reconcile.status_page import render_page
from services.reconcile.status_queries import DeliveryRow, StatusSnapshot

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
UNKNOWN = DeliveryRow(
    "s3_7009_1009_full_1740830400000", "processed", "delivered for an unknown data source (DPID 1009)", NOW
)
REJECTED = DeliveryRow("sub/<b>x</b>_full_1740830400001", "rejected", "part md5 differs from the .info", NOW)


def test_a_delivery_for_an_unknown_data_source_is_listed_with_its_reason() -> None:
    page = render_page(StatusSnapshot(generated_at=NOW, deliveries=[UNKNOWN, REJECTED]))
    section = page[page.index('id="deliveries-section"') :]
    assert "Deliveries not imported" in section
    assert 'data-batch="s3_7009_1009_full_1740830400000"' in section
    assert "delivered for an unknown data source (DPID 1009)" in section
    assert "filed, not imported" in section
    assert "rejected" in section
    # Batch names come from the platform (or whoever wrote into the zone): escaped like everything else.
    assert "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in section


def test_no_such_delivery_says_so() -> None:
    page = render_page(StatusSnapshot(generated_at=NOW))
    assert 'id="deliveries-empty"' in page
    assert "Every delivered batch fed its lists." in page


def test_the_json_lists_them_too() -> None:
    body = orjson.loads(orjson.dumps(snapshot_json(StatusSnapshot(generated_at=NOW, deliveries=[UNKNOWN]))))
    assert body["deliveries_not_imported"] == [
        {
            "batch_root": UNKNOWN.batch_root,
            "state": "processed",
            "reason": "delivered for an unknown data source (DPID 1009)",
            "finished_at": NOW.isoformat(),
        }
    ]
