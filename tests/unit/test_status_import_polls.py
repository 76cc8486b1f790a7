"""The status page's import polling section: each import audience's interval, last and next poll, escaped;
and the same in the JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.reconcile.import_poll_reads import ImportPollRow
from services.reconcile.status_json import snapshot_json
from services.reconcile.status_page import render_page
from services.reconcile.status_queries import StatusSnapshot

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _row(audience_id: str, **changes: object) -> ImportPollRow:
    values: dict[str, object] = {
        "audience_id": audience_id,
        "name": "<b>Visitors</b>",
        "data_source": "visitors",
        "every_s": 3600,
        "anchor": T0,
        "last_slot": T0 + timedelta(hours=2),
        "last_polled_at": T0 + timedelta(hours=2, seconds=1),
    }
    values.update(changes)
    return ImportPollRow(**values)  # type: ignore[arg-type]


def _section(page: str) -> str:
    return page.split('<section id="import-polls">', 1)[1].split("</section>", 1)[0]


def test_each_import_audience_with_an_interval_shows_its_last_and_next_poll() -> None:
    snapshot = StatusSnapshot(
        generated_at=T0 + timedelta(hours=2, minutes=5),
        import_polls=(
            _row("polled"),
            _row("first", last_slot=None, last_polled_at=None),
            _row("unseen", anchor=None, last_slot=None, last_polled_at=None),
        ),
    )
    rows = _section(render_page(snapshot)).split('<tr class="import-poll"')[1:]
    assert len(rows) == 3
    assert 'class="t last-poll">2026-03-01 12:00:01<' in rows[0]
    assert 'class="t next-poll">2026-03-01 13:00:00<' in rows[0]
    assert 'class="t last-poll">never<' in rows[1]
    assert 'class="t next-poll">2026-03-01 11:00:00<' in rows[1]
    assert "once ingest has seen it" in rows[2]
    assert "<b>Visitors</b>" not in rows[0]
    assert "&lt;b&gt;Visitors&lt;/b&gt;" in rows[0]
    assert snapshot_json(snapshot)["import_polls"][0] == {
        "audience_id": "polled",
        "every_s": 3600,
        "last_poll_at": "2026-03-01T12:00:01+00:00",
        "last_slot": "2026-03-01T12:00:00+00:00",
        "next_poll_at": "2026-03-01T13:00:00+00:00",
    }


def test_without_intervals_the_section_says_every_scan_feeds_every_audience() -> None:
    section = _section(render_page(StatusSnapshot(generated_at=T0)))
    assert "fed at every scan" in section
    assert "<table" not in section
